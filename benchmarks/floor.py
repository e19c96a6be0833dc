"""The evaluation benchmark's floor on this machine: the matrix products its work needs,
timed at this machine's own product rates, so the best time any fp32 implementation made
of these products could reach, and the speed ratio over the transformers pipeline that
allows.

    python benchmarks/floor.py                 # SmolLM2-135M-Instruct, eval.py's 20 rows
    python benchmarks/floor.py --rows 40 --transformers-seconds 61

Work, counted from the rows eval.py runs (`evaluation_work`):
- scoring: every prefix-tree node through the layers, and the LM head at the parent of
  every scored token (what `score_prefix_trees` multiplies);
- generation: the prompts' own tokens through the layers (prefill), then every answer
  token after the first through the layers, and each answer token through the head.
  Answers run to their budgets (the instruct model's do: 157-177 tokens), or, with answers
  known from scoring (`eval_tofu_memorized`), are not decoded at all.
Only the dense products are counted: attention over the cache, softmax, norms, the
statistics and the padding are left out, so a real run takes longer than its floor.

Rates: one stack of the model's products (each layer's q, k, v, o, gate, up and down, then
the LM head) at scoring's rows (2 x 512) and at decoding's (the decoding batch), jitted in
XLA (jaxunlearn's products) and in PyTorch (oneDNN's), on all cores and on one (a child
process pinned to core 0). Decoding is a chain of steps, so its floor is its work at its
best rate on any number of cores; the whole floor is also at least the core-seconds of all
the work at the best per-core rates, divided by the cores. The floor is the larger.

The ceiling ratio divides the transformers pipeline's time by the floor: from the eval
entries of `--results` (benchmarks/results.json, where run_all.py puts this entry beside
them), or `--transformers-seconds`. A target above the ceiling is out of reach on this
machine for products at these rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_step.py
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import numpy as np  # noqa: E402

SCORING_ROWS = 1024  # a scoring batch: 2 prefix-tree sequences of 512 slots
CASES = {  # case: (the eval entry it bounds, whether its answers are decoded)
    "answers decoded to their budgets": ("eval_tofu", True),
    "answers known from scoring": ("eval_tofu_memorized", False),
}


def shapes(config) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(one layer's product shapes [in, out], the head's), from a model config."""
    d, hd = config.hidden_size, config.head_dim
    mlp = [(d, config.intermediate_size)] * (2 if config.arch.mlp == "gated" else 1)
    layer = [(d, config.num_heads * hd), (d, config.num_kv_heads * hd), (d, config.num_kv_heads * hd)]
    layer += [(config.num_heads * hd, d), *mlp, (config.intermediate_size, d)]
    return layer, (d, config.vocab_size)


def work(model, tokenizer, rows: int, max_length: int) -> dict:
    """Rows through the layers and through the head, per phase, for eval.py's rows."""
    import eval as eval_benchmark

    from jaxunlearn.data.tokenize import pad_token_id
    from jaxunlearn.evaluation.kernels import decoding_batch_size, supervised_tokens
    from jaxunlearn.evaluation.prefix_trees import choose_trees

    args = types.SimpleNamespace(split="forget10_perturbed", rows=rows, data_dir=None, max_length=max_length)
    evalset, budgets = eval_benchmark.evaluation_work(tokenizer, args)
    candidates = evalset.candidates
    trees = choose_trees(candidates, pad_token_id(tokenizer), model.config)
    parents = set()  # (sequence, slot) where the head runs
    for r in range(len(candidates)):
        slots = trees.row_slots[r]
        parents.update((int(trees.row_sequence[r]), int(slots[j - 1])) for j in supervised_tokens(candidates, r))
    budgets = np.asarray(budgets, np.int64)
    return {
        "rows": rows,
        "candidates": len(candidates),
        "scoring_layer_rows": int(trees.nodes.sum()),
        "scoring_head_rows": len(parents),
        "prefill_layer_rows": int(sum(len(p) for p in evalset.prompts)),
        "decoding_layer_rows": int((budgets - 1).sum()),
        "decoding_head_rows": int(budgets.sum()),
        "decoding_batch": decoding_batch_size(rows, None),  # generate_texts' even batches
    }


def row_flops(config) -> tuple[float, float]:
    """FLOPs one row costs in the layers' products and in the LM head's."""
    layer, (d, vocab) = shapes(config)
    return 2.0 * config.num_layers * sum(a * b for a, b in layer), 2.0 * d * vocab


def _stack(x, ws, head, silu, gelu):
    """The model's products on rows x, layer by layer, then the head: the same code for
    jax arrays and torch tensors (`silu`, `gelu`: the framework's)."""
    outs = []
    for q, k, v, o, *mlp, down in ws:
        a = (x @ q) @ o
        outs += [x @ k, x @ v]
        m = silu(x @ mlp[0]) * (x @ mlp[1]) if len(mlp) == 2 else gelu(x @ mlp[0])
        x = x + a + m @ down
    return x @ head, outs


def _median_seconds(run, rounds: int) -> float:
    run()  # compile / warm up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return common.median(times)


def stack_rates(config, rows: int, rounds: int) -> dict:
    """GFLOP/s of the product stack at `rows` rows in XLA (jitted) and in PyTorch, on the
    same random weights."""
    import jax
    import torch

    layer_shapes, head_shape = shapes(config)
    rng = np.random.default_rng(0)
    ws = [[rng.standard_normal(s, np.float32) * 0.02 for s in layer_shapes] for _ in range(config.num_layers)]
    head = rng.standard_normal(head_shape, np.float32) * 0.02
    x = rng.standard_normal((rows, head_shape[0]), np.float32)
    on_jax = jax.tree.map(jax.numpy.asarray, (x, ws, head))
    on_torch = jax.tree.map(torch.from_numpy, (x, ws, head))
    jitted = jax.jit(lambda *a: _stack(*a, jax.nn.silu, jax.nn.gelu))
    layer_flops, head_flops = row_flops(config)
    flops = rows * (layer_flops + head_flops)
    xla = _median_seconds(lambda: jax.block_until_ready(jitted(*on_jax)), rounds)
    with torch.no_grad():
        eager = _median_seconds(lambda: _stack(*on_torch, torch.nn.functional.silu, torch.nn.functional.gelu), rounds)
    return {f"xla_{rows}": flops / xla / 1e9, f"torch_{rows}": flops / eager / 1e9}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def rates(config, decoding_rows: int, rounds: int) -> dict:
    """GFLOP/s of the product stack per framework and row count, with this process's cores."""
    import torch

    torch.set_num_threads(usable_cores())
    return {**stack_rates(config, SCORING_ROWS, rounds), **stack_rates(config, decoding_rows, rounds)}


def one_core_rates(args, decoding_rows: int) -> dict:
    """rates() in a child process pinned to core 0 (the affinity set before jax or torch
    start their thread pools)."""
    cmd = [sys.executable, __file__, "--child-one-core", str(decoding_rows), "--rounds", str(args.rounds)]
    cmd += ["--model", args.model]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the one-core child failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def floors(w: dict, all_cores: dict, one_core: dict, cores: int, layer_flops: float, head_flops: float) -> dict:
    """Seconds, per case and per framework's rates: the larger of the decoding chain at its
    best rate and the core-seconds of all the work at the best per-core rates over the cores."""
    small = w["decoding_batch"]
    large_flops = (w["scoring_layer_rows"] + w["prefill_layer_rows"]) * layer_flops + w[
        "scoring_head_rows"
    ] * head_flops
    decode_flops = w["decoding_layer_rows"] * layer_flops + w["decoding_head_rows"] * head_flops
    out = {}
    for case, (_, decoded) in CASES.items():
        dec = decode_flops if decoded else 0.0
        large = large_flops if decoded else large_flops - w["prefill_layer_rows"] * layer_flops
        out[case] = {"work_TFLOP": (large + dec) / 1e12}
        for fw in ("xla", "torch"):
            best_small = max(all_cores[f"{fw}_{small}"], one_core[f"{fw}_{small}"]) * 1e9
            per_core_small = max(one_core[f"{fw}_{small}"], all_cores[f"{fw}_{small}"] / cores) * 1e9
            per_core_large = max(one_core[f"{fw}_{SCORING_ROWS}"], all_cores[f"{fw}_{SCORING_ROWS}"] / cores) * 1e9
            chain = dec / best_small
            core_seconds = (dec / per_core_small + large / per_core_large) / cores
            out[case][f"{fw}_floor_s"] = max(chain, core_seconds)
    return out


def transformers_seconds(results: Path) -> dict:
    """Per eval entry of a results file: its warm total phase (`common.warm_total`)."""
    entries = json.loads(results.read_text()).get("entries", {}) if results.exists() else {}
    return {name: warm for name, e in entries.items() if (warm := common.warm_total(e["result"]))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rows", type=int, default=20, help="eval.py's --rows")
    p.add_argument("--max-length", type=int, default=200, help="eval.py's --max-length")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--results", default=str(HERE / "results.json"), help="where the eval entries' transformers times are"
    )
    p.add_argument("--transformers-seconds", type=float, help="the transformers pipeline's time, for every case")
    p.add_argument("--json")
    p.add_argument("--child-one-core", type=int, help=argparse.SUPPRESS)  # its decoding rows
    args = p.parse_args(argv)
    if args.child_one_core:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import jaxunlearn

    model, tokenizer = jaxunlearn.load_pretrained(args.model)
    if args.child_one_core:
        print(json.dumps(rates(model.config, args.child_one_core, args.rounds)))
        return {}
    w = work(model, tokenizer, args.rows, args.max_length)
    cores = usable_cores()
    all_cores = rates(model.config, w["decoding_batch"], args.rounds)
    # one core needs pinning (Linux); elsewhere the all-cores rates stand for it too
    pinnable = cores > 1 and hasattr(os, "sched_setaffinity")
    one_core = one_core_rates(args, w["decoding_batch"]) if pinnable else all_cores
    result = {
        "model": args.model,
        "work": w,
        "cores": cores,
        "GFLOP_per_s": {"all_cores": all_cores, "one_core": one_core},
        "cases": floors(w, all_cores, one_core, cores, *row_flops(model.config)),
        "environment": common.environment(),
    }
    measured = transformers_seconds(Path(args.results))
    for case, (entry, _) in CASES.items():
        row = result["cases"][case]
        warm = {} if args.transformers_seconds else measured.get(entry, {})
        row["eval_entry"] = entry
        row.update(common.ceilings(row, args.transformers_seconds or warm.get("transformers_s"), warm.get("speedup")))
    print(f"work of {w['rows']} rows ({w['candidates']} candidates): {json.dumps(w)}")
    rate_rows = [
        {
            "rows": r,
            **{
                f"{fw} {where}": round(v[f"{fw}_{r}"])
                for fw in ("xla", "torch")
                for where, v in (("all cores", all_cores), ("one core", one_core))
            },
        }
        for r in (SCORING_ROWS, w["decoding_batch"])
    ]
    print("GFLOP/s of the product stack:\n" + common.table(rate_rows, list(rate_rows[0])))
    case_rows = [{"case": case, **{k: v for k, v in row.items()}} for case, row in result["cases"].items()]
    print(common.table(case_rows, list(case_rows[0])))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
