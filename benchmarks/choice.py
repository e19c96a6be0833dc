"""Multiple-choice scoring: jaxunlearn's scorer against lm-eval's HF backend, same model,
same questions, same prompts, same machine.

    python benchmarks/choice.py                      # SmolLM2-135M-Instruct, 1,000 questions
    python benchmarks/choice.py --questions 200 --rounds 3

The questions are WMDP-schema rows (4 choices, lm-eval's WMDP prompt) written by
examples/synthetic_benchmarks.py; lm-eval reads them through a task YAML identical to
its wmdp_bio but for the data files. Both sides score every (question, choice) pair's
log-likelihood in fp32 with batch --batch; jaxunlearn packs a question's choices into
one prefix tree (the shared prompt computed once). Times are whole task evaluations
(lm-eval: simple_evaluate; jaxunlearn: evaluate_choice, after one compiling run), medians
of --rounds interleaved rounds; accuracies must be equal and the largest log-likelihood difference is printed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_step.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import common  # noqa: E402
import numpy as np  # noqa: E402


def write_task(folder: Path, questions: int, kind: str) -> Path:
    """wmdp: WMDP-bio's layout, zero-shot; mmlu: one MMLU subject with a dev split (few-shot)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from synthetic_benchmarks import lm_eval_choice_task, mc_rows

    rng = random.Random(0)
    rows = [{k: r[k] for k in ("answer", "question", "choices")} for r in mc_rows(rng, questions + 5, "bio")]
    where = folder / ("wmdp/wmdp-bio" if kind == "wmdp" else "mmlu/anatomy")
    where.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[5:]), where / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:5]), where / "dev-00000-of-00001.parquet")
    (folder / "tasks").mkdir()
    subject = "biology" if kind == "wmdp" else "anatomy"
    task = lm_eval_choice_task(f"bench_{kind}", where, subject, fewshot=True)
    (folder / "tasks" / f"bench_{kind}.yaml").write_text(task)
    return folder


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="built-in asset or HF directory")
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--task", choices=("wmdp", "mmlu"), default="wmdp", help="wmdp: zero-shot; mmlu: --fewshot shots")
    p.add_argument("--fewshot", type=int, default=5, help="--task mmlu: examples before each question")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each side, interleaved")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM

    import jaxunlearn
    from jaxunlearn.data.choice import load_task
    from jaxunlearn.suites.choice import evaluate_choice

    folder = write_task(Path(tempfile.mkdtemp(prefix="choice-bench-")), args.questions, args.task)
    shots = args.fewshot if args.task == "mmlu" else 0
    model, tokenizer = jaxunlearn.load_pretrained(args.model)
    hf_dir = folder / "hf"
    jaxunlearn.save_pretrained(model, tokenizer, hf_dir)  # the same weights for transformers
    torch_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    lm = HFLM(pretrained=torch_model, tokenizer=tokenizer, batch_size=args.batch, device="cpu")
    manager = TaskManager(include_path=str(folder / "tasks"), include_defaults=False)  # the written task alone
    task = load_task("wmdp_bio" if args.task == "wmdp" else "mmlu_anatomy", folder, shots)
    task_name = f"bench_{args.task}"

    def run_lm_eval():
        return lm_eval.simple_evaluate(
            model=lm, tasks=[task_name], task_manager=manager, log_samples=True, num_fewshot=shots or None
        )

    def run_jax():
        return evaluate_choice(model, tokenizer, task, args.batch)

    t = time.perf_counter()
    ours = run_jax()
    cold = time.perf_counter() - t
    times = {"jaxunlearn": [], "lm-eval HF": []}
    theirs = None
    for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
        for name, fn in (("jaxunlearn", run_jax), ("lm-eval HF", run_lm_eval)):
            t = time.perf_counter()
            out = fn()  # lm-eval compiles nothing: its first run is timed too
            times[name].append(time.perf_counter() - t)
            theirs = out if name == "lm-eval HF" else theirs
    ll_ref = np.array([[r[0] for r in s["filtered_resps"]] for s in theirs["samples"][task_name]], float)
    result = {
        "model": args.model,
        "questions": args.questions,
        "task": args.task,
        "fewshot": shots,
        "batch": args.batch,
        "jaxunlearn_s": common.median(times["jaxunlearn"]),
        "jaxunlearn_cold_s": cold,
        "lm_eval_hf_s": common.median(times["lm-eval HF"]),
        "times": times,
        "acc_jaxunlearn": ours.summary()["acc"],
        "acc_lm_eval": theirs["results"][task_name]["acc,none"],
        "max_loglik_diff": float(np.abs(ll_ref - np.array(ours.loglikelihoods)).max()),
        "threads": torch.get_num_threads(),
        "environment": common.environment(),
    }
    result["speedup"] = result["lm_eval_hf_s"] / result["jaxunlearn_s"]
    print(
        f"{args.questions} questions x 4 choices ({args.task}, {shots}-shot), {args.model}, batch {args.batch}: "
        f"jaxunlearn "
        f"{result['jaxunlearn_s']:.1f} s warm ({cold:.1f} s cold), lm-eval HF {result['lm_eval_hf_s']:.1f} s: "
        f"{result['speedup']:.2f}x; acc {result['acc_jaxunlearn']:.3f} vs {result['acc_lm_eval']:.3f}, "
        f"largest log-likelihood difference {result['max_loglik_diff']:.2e}"
    )
    print("environment:", common.environment_line(result["environment"]))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
