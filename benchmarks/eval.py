"""The default TOFU evaluation, jaxunlearn against a transformers pipeline, on the same
model and rows, each side with its own default batches.

    python benchmarks/eval.py                          # SmolLM2-135M-Instruct, 20 forget rows
    python benchmarks/eval.py --rows 40 --max-length 200

Work per row (TOFU's default): the average NLL of the answer, the paraphrased answer and
every perturbed answer (probability, truth ratio), and a greedy answer of up to
`--max-length` minus its own prompt new tokens (ROUGE; the per_row budget).

jaxunlearn runs its evaluation's own calls with its defaults: `score_candidates`
(candidates merged into prefix trees, so each shared prefix, such as a question's prompt,
is computed once; `--batch`, eval.batch_size) and `generate_texts` (KV-cache decoding in
one `lax.while_loop`, in the fewest even batches of up to 64 rows; `--generation-batch`
pins a size). The transformers side runs the way open-unlearning evaluates, with its
TOFU configs' batch sizes: a batched forward over whole (prompt, candidate) rows with an
HF loss per row (`--torch-batch`, 32 as its Prob metrics), and `model.generate` on
batches of `--torch-generation-batch` prompts (64 as its ROUGE metrics), each left-padded
to its longest (its collator). Both sides give every prompt the same number of new
tokens. The outputs must agree: the largest NLL difference and the count of identical
generations are printed with the times (jaxunlearn cold = including compilation, warm =
compiled). Runs before the fourteenth session (2026-12-02) used batches of 16 on both
sides: `--torch-batch 16 --torch-generation-batch 16 --generation-batch 16`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_step.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402


def load_rows(split: str, rows: int, data_dir: str | None):
    from jaxunlearn.data import load_tofu

    return load_tofu(split, data_dir)[:rows]


def jax_side(
    model,
    tokenizer,
    evalset,
    pad,
    batch: int,
    budgets,
    projections="auto",
    generation_batch=None,
    overlap=False,
    from_scoring=False,
):
    """evaluate_model's own calls: answer rows with full statistics, the rest log-probs
    only; answers decoded in batches of `generation_batch` rows (None: the evaluation's
    default), beside the scoring if `overlap` (then "generate" is the time generation
    adds after scoring has ended), or after it from what scoring showed of them if
    `from_scoring` (`known_answers`)."""
    from jaxunlearn.evaluation.evaluate import score_candidates
    from jaxunlearn.evaluation.kernels import generate_texts
    from jaxunlearn.evaluation.known_answers import known_prefixes
    from jaxunlearn.evaluation.overlap import generation_beside

    t = time.perf_counter()
    work = (model, tokenizer, evalset.prompts, pad, tokenizer.eos_token_id, generation_batch, budgets)
    with generation_beside(overlap, lambda stop: generate_texts(*work, projections=projections)) as answers:
        answer_scores, nll = score_candidates(model, evalset, pad, batch)
        scored = time.perf_counter()
        if from_scoring:
            known = known_prefixes(evalset, answer_scores, tokenizer.eos_token_id)
            gens = generate_texts(*work, projections=projections, known=known)
        else:
            gens = answers()
    return nll, gens, {"score": scored - t, "generate": time.perf_counter() - scored}


def torch_side(model, tokenizer, evalset, pad, batch: int, budgets, generation_batch: int):
    """transformers: whole rows, longest first, `batch` at a time, each batch padded to its
    longest row (shapes cost eager PyTorch nothing); generation in batches of
    `generation_batch` prompts, longest first, each padded to its longest prompt, with each
    row's new-token budget (the batch runs to its largest and each answer is cut at its
    own). Runs on the model's device (a GPU's work is waited for before each time is
    read)."""
    import torch
    import torch.nn.functional as F

    device = model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    from jaxunlearn.data.batching import pad_rows
    from jaxunlearn.data.eval_sets import left_pad

    t = time.perf_counter()
    rows = evalset.candidates
    nll = np.zeros(len(rows))
    order = np.argsort(-rows.lengths(), kind="stable")
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            index = list(order[start : start + batch])
            length = int(rows.lengths()[index].max())  # eager PyTorch pads to the longest row, no buckets
            b = {
                k: torch.tensor(v, dtype=torch.long, device=device)
                for k, v in pad_rows(rows, index, length, pad).items()
            }
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            ce = F.cross_entropy(
                logits[:, :-1].transpose(1, 2), b["labels"][:, 1:], ignore_index=-100, reduction="none"
            )
            count = (b["labels"][:, 1:] != -100).sum(-1).clamp(min=1)
            nll[index] = (ce.sum(-1) / count).cpu().numpy()
        sync()
        scored = time.perf_counter()
        prompts = evalset.prompts
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        gens = [None] * len(prompts)
        for start in range(0, len(prompts), generation_batch):
            index = list(order[start : start + generation_batch])
            ids, mask = left_pad([prompts[i] for i in index], pad, max(len(prompts[i]) for i in index))
            out = model.generate(
                input_ids=torch.tensor(ids, dtype=torch.long, device=device),
                attention_mask=torch.tensor(mask, dtype=torch.long, device=device),
                max_new_tokens=max(1, int(budgets[index].max())),
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
            )
            for j, i in enumerate(index):
                new = out[j, ids.shape[1] : ids.shape[1] + budgets[i]].tolist()  # the row's own budget
                cut = next((k for k, tok in enumerate(new) if tok == tokenizer.eos_token_id), len(new))
                gens[i] = tokenizer.decode(new[:cut], skip_special_tokens=True).strip()
        sync()
    return nll, gens, {"score": scored - t, "generate": time.perf_counter() - scored}


def evaluation_work(tokenizer, args):
    """(eval set, generation budgets) of the benchmark's rows, as evaluate_model builds them."""
    from jaxunlearn.data.eval_sets import build_eval_set
    from jaxunlearn.data.templates import default_template_name, get_template
    from jaxunlearn.evaluation.budgets import generation_budgets

    template = get_template(default_template_name(tokenizer), tokenizer)
    evalset = build_eval_set(tokenizer, template, load_rows(args.split, args.rows, args.data_dir), "forget", 512, None)
    return evalset, generation_budgets([len(x) for x in evalset.prompts], "per_row", args.max_length)


def child_cold(args) -> dict:
    """A fresh process: the compilation cache at args.child_cold, then one cold jaxunlearn
    evaluation; its times as the last line of stdout."""
    import json

    import jaxunlearn
    from jaxunlearn.compilation_cache import enable
    from jaxunlearn.data.tokenize import pad_token_id

    enable(args.child_cold)
    model, tokenizer = jaxunlearn.load_pretrained(args.model)
    evalset, budgets = evaluation_work(tokenizer, args)
    work = (evalset, pad_token_id(tokenizer), args.batch, budgets, args.projections, args.generation_batch)
    times = jax_side(model, tokenizer, *work, *generation_mode(args, model))[2]
    print(json.dumps(times))
    return times


def generation_mode(args, model) -> tuple[bool, bool]:
    """(beside scoring, from what scoring showed) for jaxunlearn's answers: the flags, or
    the evaluation's own defaults (a model loaded here is on one device)."""
    from jaxunlearn.evaluation.known_answers import answer_order

    flag = {"auto": None, "true": True, "false": False}
    settings = flag[args.answers_from_scoring], flag[args.overlap_generation]
    return answer_order(*settings, None, model.config.compute_dtype)


def memorized_model(args, out: Path) -> Path:
    """The benchmark's model finetuned on the benchmark's own rows for args.memorize epochs
    (the `finetune` command), so that it reproduces their answers as a TOFU target model
    reproduces its training set's: the case where answers known from scoring save the
    decoding."""
    split = args.split.removesuffix("_perturbed")
    command = [sys.executable, "-m", "jaxunlearn", "finetune", f"model.path={args.model}"]
    command += [f"data.train_split={split}", f"data.max_train_rows={args.rows}", "data.max_length=128"]
    command += [f"train.epochs={args.memorize}", "train.lr=2e-4", "train.batch_size=8", "train.warmup_steps=0"]
    command += [f"output.dir={out}", "--no-progress"] + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    print(f"finetuning {args.model} on the first {args.rows} rows of {split} ({args.memorize} epochs)", flush=True)
    subprocess.run(command, check=True)
    return out / "model"


def cached_cold_seconds(args) -> float:
    """Cold jaxunlearn time of a second fresh process, after a first one filled the cache."""
    shared = ["--model", args.model, "--split", args.split, "--rows", str(args.rows), "--batch", str(args.batch)]
    shared += ["--max-length", str(args.max_length), "--projections", args.projections]
    shared += ["--overlap-generation", args.overlap_generation, "--answers-from-scoring", args.answers_from_scoring]
    shared += ["--generation-batch", str(args.generation_batch)] if args.generation_batch else []
    shared += ["--data-dir", args.data_dir] if args.data_dir else []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            times = common.rss_of_child(__file__, ["--child-cold", cache, *shared])
    return times["score"] + times["generate"]


def main(argv=None) -> dict:
    from jaxunlearn.evaluation.projection_layout import PROJECTION_LAYOUTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="checkpoint (path or built-in asset)")
    p.add_argument("--split", default="forget10_perturbed")
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--batch", type=int, default=16, help="jaxunlearn's scoring batch (eval.batch_size)")
    p.add_argument("--torch-batch", type=int, default=32, help="transformers' scoring batch (open-unlearning: 32)")
    p.add_argument(
        "--torch-generation-batch", type=int, default=64, help="transformers' generation batch (open-unlearning: 64)"
    )
    p.add_argument(
        "--generation-batch",
        type=int,
        default=None,
        help="rows per jaxunlearn decoding batch (default: its evaluation's, even batches of up to 64)",
    )
    p.add_argument("--max-length", type=int, default=200, help="generation: prompt + answer tokens")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each side, interleaved (medians)")
    p.add_argument("--torch-device", default="cpu", help="where the transformers side runs: cpu or cuda")
    p.add_argument(
        "--projections",
        default="auto",
        choices=PROJECTION_LAYOUTS,
        help="how jaxunlearn's decoding multiplies its projections (auto: by CPU, see evaluation.projection_layout)",
    )
    for flag, meaning in (
        (
            "--overlap-generation",
            "jaxunlearn decodes beside its scoring, on a second thread (eval.overlap_generation; auto: the "
            "evaluation's default, on for a single-process CPU run)",
        ),
        (
            "--answers-from-scoring",
            "jaxunlearn starts each answer with what scoring showed the model gives, after scoring "
            "(eval.answers_from_scoring; auto: the evaluation's default, on when answers are not decoded beside it)",
        ),
    ):
        p.add_argument(flag, default="auto", choices=("auto", "true", "false"), help=meaning)
    p.add_argument(
        "--memorize",
        type=float,
        default=0,
        metavar="EPOCHS",
        help="first finetune the model on the benchmark's rows for EPOCHS epochs (a model that reproduces its "
        "answers, as a TOFU target model does); both sides then evaluate that model",
    )
    p.add_argument(
        "--cached-cold",
        action="store_true",
        help="also time a fresh process whose compilation cache an earlier process filled (what a repeated "
        "CLI command gets: jaxunlearn keeps compiled steps in ~/.cache/jaxunlearn/xla)",
    )
    p.add_argument("--child-cold", metavar="CACHE_DIR", help=argparse.SUPPRESS)  # one cold jaxunlearn run
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.child_cold:
        return child_cold(args)
    with tempfile.TemporaryDirectory() as tmp:  # the memorized model lives here while children load it
        return compare(args, Path(tmp))


def compare(args, tmp: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    import jaxunlearn
    from jaxunlearn.data.tokenize import pad_token_id
    from jaxunlearn.evaluation.projection_layout import projection_layout

    name = args.model
    if args.memorize:
        args.model = str(memorized_model(args, tmp / "memorized"))
    model, tokenizer = jaxunlearn.load_pretrained(args.model)
    jaxunlearn.save_pretrained(model, tokenizer, tmp / "model")  # one HF checkpoint that both sides load
    model, tokenizer = jaxunlearn.load_pretrained(tmp / "model")
    hf = (
        AutoModelForCausalLM.from_pretrained(tmp / "model", dtype=torch.float32, attn_implementation="sdpa")
        .eval()
        .to(args.torch_device)
    )
    evalset, budgets = evaluation_work(tokenizer, args)
    work = (evalset, pad_token_id(tokenizer), args.batch, budgets)
    overlap, from_scoring = generation_mode(args, model)
    options = (args.projections, args.generation_batch, overlap, from_scoring)
    torch_work = (evalset, pad_token_id(tokenizer), args.torch_batch, budgets, args.torch_generation_batch)

    _, _, cold = jax_side(model, tokenizer, *work, *options)
    runs = {"jaxunlearn": [], "transformers": []}
    for _ in range(args.rounds):  # interleaved: jaxunlearn warm, transformers
        nll_j, gens_j, t = jax_side(model, tokenizer, *work, *options)
        runs["jaxunlearn"].append({**t, "total": t["score"] + t["generate"]})
        nll_t, gens_t, t = torch_side(hf, tokenizer, *torch_work)
        runs["transformers"].append({**t, "total": t["score"] + t["generate"]})
    same = sum(a == b for a, b in zip(gens_j, gens_t))
    rows = []
    labels = ("score, generation beside it", "generate, after scoring ended") if overlap else ("score", "generate")
    for phase, label in (("score", labels[0]), ("generate", labels[1]), ("total", "total (warm)")):
        js, ts = ([r[phase] for r in runs[k]] for k in ("jaxunlearn", "transformers"))
        j, t = common.median(js), common.median(ts)
        rows.append(
            {
                "phase": label,
                "jaxunlearn_s": j,
                "transformers_s": t,
                "speedup": t / j,
                "speedup_range": common.ratio_range(js, ts),
            }
        )
    c = sum(cold.values())
    rows.append(
        {"phase": "total (jaxunlearn cold, incl. compile)", "jaxunlearn_s": c, "transformers_s": t, "speedup": t / c}
    )
    if args.cached_cold:
        c = cached_cold_seconds(args)
        phase = "total (jaxunlearn cold, compilation cache of an earlier process)"
        rows.append({"phase": phase, "jaxunlearn_s": c, "transformers_s": t, "speedup": t / c})
    result = {
        "model": name,
        "memorized_epochs": args.memorize,  # finetuned on the benchmark's rows first (0: as loaded)
        "split": args.split,
        "rows": len(evalset),
        "candidates": len(evalset.candidates),
        "batch": args.batch,
        "generation_batch": args.generation_batch or "auto",  # jaxunlearn's decoding batches
        "torch_batch": args.torch_batch,
        "torch_generation_batch": args.torch_generation_batch,
        "max_length": args.max_length,
        "device": common.accelerator_name(),
        "decoding_projections": projection_layout(args.projections),  # how decoding multiplied
        "overlap_generation": overlap,  # jaxunlearn decoded beside its scoring
        "answers_from_scoring": from_scoring,  # jaxunlearn's answers started from what scoring showed
        "torch_threads": torch.get_num_threads(),
        "torch_device": args.torch_device,
        "phases": rows,
        "max_abs_avg_nll_diff": float(np.abs(nll_j - nll_t).max()),
        "identical_generations": f"{same}/{len(gens_j)}",
        "rounds": args.rounds,
        "runs": runs,
        "environment": common.environment(),
    }
    print(
        f"\nTOFU evaluation of {args.model}: {len(evalset)} rows of {args.split} ({len(evalset.candidates)} "
        f"scored candidates, greedy answers up to {args.max_length} tokens; batches: jaxunlearn scoring "
        f"{args.batch}, decoding {result['generation_batch']}; transformers scoring {args.torch_batch}, "
        f"generation {args.torch_generation_batch}; "
        f"{result['device']}, decoding projections {result['decoding_projections']}; jaxunlearn generation "
        f"{'beside' if overlap else 'after'} scoring{', from what it showed' if from_scoring else ''}"
        f"{f'; model finetuned on these rows for {args.memorize:g} epochs' if args.memorize else ''})"
    )
    print(common.table(rows, ["phase", "jaxunlearn_s", "transformers_s", "speedup", "speedup_range"]))
    print(f"medians of {args.rounds} interleaved rounds; per-round ratios in speedup_range")
    print("environment:", common.environment_line(result["environment"]))
    print(
        f"outputs: max |avg NLL diff| {result['max_abs_avg_nll_diff']:.2e}; identical greedy answers "
        f"{result['identical_generations']}"
    )
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
