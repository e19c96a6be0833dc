"""The unlearning step, jaxunlearn against PyTorch, on the same Llama weights and batches.

    python benchmarks/train_step.py --shape llama-20m --objective NPO+GD
    python benchmarks/train_step.py --shape smollm2-135m --objective ME+GD --rounds 3
    python benchmarks/train_step.py --shape smollm2-135m --precompute-reference  # NPO's reference NLL read, not run

The PyTorch side is the step the way open-unlearning runs it: transformers'
LlamaForCausalLM in eager mode (SDPA attention), one forward per stream, the frozen
reference under no_grad, loss.backward(), torch.optim.AdamW. The jaxunlearn side is
`make_train_step` + `jit_train_step` (one jitted step, state donated). Both start from
the same weights and batch; their first-step losses are printed side by side. Steps are
timed round-robin after a warm-up, so machine noise hits both alike. Peak memory comes
from a fresh process per framework (peak RSS on CPU, the allocator's peak on GPU).
OpenMP threads wait passively (OMP_WAIT_POLICY), so neither framework's idle threads spin
on the cores the other is using. With --precompute-reference the jaxunlearn step reads the
reference's NLL of the forget rows, computed once before training as
`train.precompute_reference` does (open-unlearning runs the reference every step); its
time per step then includes that one-off pass spread over --epochs (default 10, TOFU's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

# Both frameworks share the cores in one process: OpenMP threads that spin-wait after a
# torch op would steal them from XLA's next step (and XLA's from torch), so they sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402

BETA = 0.1  # NPO


# --- PyTorch (open-unlearning style) -----------------------------------------------------


def _torch_seq_nll(logits, labels):
    import torch.nn.functional as F

    lg, tg = logits[:, :-1].float(), labels[:, 1:]
    ce = F.cross_entropy(lg.transpose(1, 2), tg, ignore_index=-100, reduction="none")
    return ce.sum(-1)


def torch_runner(shape: str, objective: str, dtype: str, device: str, lr: float):
    import torch
    import torch.nn.functional as F

    model = common.torch_model(shape, dtype=dtype, device=device)
    ref = common.torch_model(shape, dtype=dtype, device=device).eval() if objective.startswith("NPO") else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    batch = {
        s: {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in common.qa_batch(shape, i).items()}
        for i, s in ((1, "forget"), (2, "retain"))
    }
    f, r = batch["forget"], batch["retain"]

    def step() -> float:
        logits = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
        if objective.startswith("NPO"):
            with torch.no_grad():
                ref_nll = _torch_seq_nll(
                    ref(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits, f["labels"]
                )
            nll = _torch_seq_nll(logits, f["labels"])
            forget = (-(2.0 / BETA) * F.logsigmoid(BETA * (nll - ref_nll))).mean()
        else:  # ME, uniform_ce over attended positions (SPEC)
            logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
            per_pos = -math.log(logp.shape[-1]) - logp.mean(-1)
            m = f["attention_mask"][:, 1:].float()
            forget = (per_pos * m).sum() / m.sum()
        retain = model(**r).loss  # GD: mean NLL of the retain answers
        loss = forget + retain
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def run(n: int):
        for _ in range(n):
            loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    return run, model


# --- jaxunlearn ----------------------------------------------------------------------------


def jax_runner(
    shape: str,
    objective: str,
    dtype: str,
    lr: float,
    remat: str,
    torch_model=None,
    vocab_block: int | None = None,
    precompute_reference: bool = False,
):
    """(run(n steps) -> last loss, memory_analysis(), reference_pass() -> seconds or None).

    precompute_reference: the step reads the reference's sequence NLL of the forget rows
    from the batch (train.precompute_reference), computed by `reference_pass` the way a run
    computes it once before training. The step takes no reference parameters; this process
    keeps them for the pass, so the peak memory it reports still includes them."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxunlearn.objectives import build_objective
    from jaxunlearn.parallel import make_mesh
    from jaxunlearn.training.optimizer import make_optimizer
    from jaxunlearn.objectives import StepBatch
    from jaxunlearn.training.step import init_state, jit_train_step, make_train_step, place_batch, place_params

    model = common.jax_model(shape, torch_model, dtype, remat)
    obj = build_objective(objective)
    mesh = make_mesh(data=1)
    graphdef, params = nnx.split(model)
    params = place_params(params, mesh)
    ref_params = jax.tree.map(jnp.copy, params) if obj.needs_reference else None
    if precompute_reference and not obj.precomputable_reference:
        raise SystemExit(
            f"--precompute-reference needs an objective whose reference is a sequence NLL, not {objective}"
        )
    tx = make_optimizer(lambda _: lr, weight_decay=0.01)
    state = jax.jit(lambda p: init_state(p, tx, 0))(params)
    if vocab_block is None:  # the run config's default
        from jaxunlearn.training.config import TrainSection

        vocab_block = TrainSection().vocab_block
    step_fn = make_train_step(
        graphdef, obj, tx, lambda _: lr, vocab_block=vocab_block, use_reference=not precompute_reference
    )
    arrays = {s: common.qa_batch(shape, i) for i, s in ((1, "forget"), (2, "retain"))}
    reference_nll, reference_pass = {}, None
    if precompute_reference:
        from jaxunlearn.training.step import sequence_nll

        forget = arrays["forget"]

        def forget_nll() -> np.ndarray:  # the one-off reference forward over one forget batch
            nll = sequence_nll(graphdef, ref_params, forget["input_ids"], forget["attention_mask"], forget["labels"])
            return np.asarray(nll)

        def reference_pass() -> float:  # its seconds, compiled
            t = time.perf_counter()
            forget_nll()
            return time.perf_counter() - t

        reference_nll["forget"] = forget_nll()  # compiles; the timed passes come later
    step_ref = None if precompute_reference else ref_params
    jitted = jit_train_step(step_fn, state, step_ref, mesh)
    batch = place_batch(StepBatch.from_arrays(arrays, reference_nll), mesh)
    holder = {"state": state}

    def run(n: int):
        for _ in range(n):
            holder["state"], metrics = jitted(holder["state"], step_ref, batch)
        return float(jax.device_get(metrics["loss"]))

    def memory_analysis():
        m = jitted.lower(holder["state"], step_ref, batch).compile().memory_analysis()
        return (
            None
            if m is None
            else {"argument_mib": m.argument_size_in_bytes / 2**20, "temp_mib": m.temp_size_in_bytes / 2**20}
        )

    return run, memory_analysis, reference_pass


def train_flops(shape: str, objective: str, reference_share: float = 1.0) -> float:
    """Model FLOPs of one step: 6 N per policy token, 2 N per reference token (a
    `reference_share` of them when the reference pass runs once per run), plus attention."""
    s = common.SHAPES[shape]
    d, layers, v, t, b = s["hidden_size"], s["num_hidden_layers"], s["vocab_size"], s["seq"], s["batch"]
    kv = d // s["num_attention_heads"] * s["num_key_value_heads"]
    per_layer = d * (2 * d + 2 * kv) + 3 * d * s["intermediate_size"]
    n = layers * per_layer + d * v  # matmul parameters incl. the head
    attn = 2 * 2 * layers * t * d  # QK^T and AV per token (causal: counted in full, as is customary)
    policy_tokens, ref_tokens = 2 * b * t, (b * t * reference_share if objective.startswith("NPO") else 0)
    return 3 * (2 * n + attn) * policy_tokens + (2 * n + attn) * ref_tokens


def child(args) -> None:
    """One framework alone in this process: a few steps, then its peak memory as JSON."""
    device = "cuda" if args.device == "gpu" else "cpu"
    if args.only == "torch":
        run, _ = torch_runner(args.shape, args.objective, args.dtype, device, args.lr)
        run(args.steps)
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else common.peak_rss_mib()
        print(json.dumps({"peak_mib": peak}))
    else:
        run, analysis, _ = jax_runner(
            *(args.shape, args.objective, args.dtype, args.lr, args.remat),
            vocab_block=args.vocab_block,
            precompute_reference=args.precompute_reference,
        )
        run(args.steps)
        import jax

        stats = jax.devices()[0].memory_stats() if device == "cuda" else None
        peak = stats["peak_bytes_in_use"] / 2**20 if stats else common.peak_rss_mib()
        print(json.dumps({"peak_mib": peak, "compiled": analysis()}))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(common.SHAPES), default="llama-20m")
    p.add_argument("--objective", choices=["NPO+GD", "ME+GD"], default="NPO+GD")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument(
        "--remat", choices=["none", "full", "dots"], default=None, help="model.remat (default: the config's)"
    )
    p.add_argument(
        "--vocab-block",
        type=int,
        help="train.vocab_block: LM-head block width (0: whole logits; default: the config's)",
    )
    p.add_argument(
        "--precompute-reference",
        action="store_true",
        help="train.precompute_reference: the jaxunlearn step reads the reference's forget NLL computed once "
        "per row before training (NPO, DPO); its time per step adds that pass amortized over --epochs",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs the one-off reference pass is spread over")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per timed round")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--no-memory", action="store_true", help="skip the per-framework peak-memory processes")
    p.add_argument("--only", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.remat is None:
        from jaxunlearn.checkpoints.config import ModelSection

        args.remat = ModelSection().remat
    if args.only:
        return child(args)

    import torch

    device = "cuda" if args.device == "gpu" else "cpu"
    torch_run, torch_model = torch_runner(args.shape, args.objective, args.dtype, device, args.lr)
    jax_run, _, reference_pass = jax_runner(
        args.shape,
        args.objective,
        args.dtype,
        args.lr,
        args.remat,
        torch_model=common.torch_model(args.shape),
        vocab_block=args.vocab_block,
        precompute_reference=args.precompute_reference,
    )
    first = {"jaxunlearn": jax_run(1), "pytorch": torch_run(1)}  # warm-up (compiles), same start
    times = common.interleaved({"jaxunlearn": jax_run, "pytorch": torch_run}, args.rounds, args.steps)
    if reference_pass is not None:  # each forget batch's reference pass, once per run: 1/epochs of it per step
        passes = [reference_pass() for _ in range(args.rounds)]
        times["jaxunlearn"] = [t + common.median(passes) / args.epochs for t in times["jaxunlearn"]]
    s = common.SHAPES[args.shape]
    tokens = 2 * s["batch"] * s["seq"]
    flops = train_flops(args.shape, args.objective, 1 / args.epochs if args.precompute_reference else 1.0)
    result = {
        "shape": args.shape,
        "objective": args.objective,
        "dtype": args.dtype,
        "remat": args.remat,
        "vocab_block": args.vocab_block,
        "precompute_reference": args.precompute_reference,
        **({"reference_pass_s": common.median(passes), "epochs": args.epochs} if reference_pass else {}),
        "device": common.accelerator_name(),
        "torch_threads": torch.get_num_threads(),
        "tokens_per_step": tokens,
        "first_step_loss": first,
        "rows": [],
    }
    for name, ts in times.items():
        sec = common.median(ts)
        row = {"framework": name, "s_per_step": sec, "tokens_per_s": tokens / sec, "TFLOP/s": flops / sec / 1e12}
        row["spread"] = common.spread_text(ts)
        peak = next((v for k, v in common.PEAK_FLOPS.items() if k in result["device"]), None)
        if peak:
            row["MFU"] = flops / sec / peak
        result["rows"].append(row)
    if not args.no_memory:
        script = os.path.abspath(__file__)
        base = [
            "--shape",
            args.shape,
            "--objective",
            args.objective,
            "--dtype",
            args.dtype,
            "--device",
            args.device,
            "--remat",
            args.remat,
            "--steps",
            "2",
            *(["--vocab-block", str(args.vocab_block)] if args.vocab_block is not None else []),
            *(["--precompute-reference"] if args.precompute_reference else []),
        ]
        for row, who in zip(result["rows"], ("jax", "torch")):
            mem = common.rss_of_child(script, [*base, "--only", who])
            row["peak_MiB"] = mem["peak_mib"]
            if mem.get("compiled"):
                row["compiled_temp_MiB"] = mem["compiled"]["temp_mib"]
    result["speedup"] = result["rows"][1]["s_per_step"] / result["rows"][0]["s_per_step"]
    print(
        f"\n{args.objective} step, {args.shape} ({s['batch']} x {s['seq']} per stream, {args.dtype}, "
        f"{result['device']}); first-step loss jaxunlearn {first['jaxunlearn']:.6f} vs "
        f"pytorch {first['pytorch']:.6f}"
    )
    print(
        common.table(
            result["rows"],
            ["framework", "s_per_step", "spread", "tokens_per_s", "TFLOP/s", "MFU", "peak_MiB", "compiled_temp_MiB"],
        )
    )
    print(f"jaxunlearn / pytorch speed: {result['speedup']:.2f}x (medians of {args.rounds} interleaved rounds)")
    if reference_pass is not None:
        print(
            f"jaxunlearn's step reads a precomputed reference NLL; its s_per_step includes the one-off reference "
            f"pass over the forget batch ({result['reference_pass_s']:.3g} s) spread over {args.epochs} epochs"
        )
    result["environment"] = common.environment()
    print("environment:", common.environment_line(result["environment"]))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
