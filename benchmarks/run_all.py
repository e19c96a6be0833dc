"""Run the benchmark set and write one results file; docs/benchmarks.md's generated tables
come from it (`python scripts/docs_benchmarks.py --write`), so the docs carry no figure
this script did not produce.

    python benchmarks/run_all.py                       # the full set (about an hour on 2 CPU cores)
    python benchmarks/run_all.py --set quick           # smaller sizes (about 30 minutes)
    python benchmarks/run_all.py --only choice_wmdp    # rerun one entry, keep the others

Each entry is one benchmark command (its arguments are stored with its result); each runs
in its own process with OMP_WAIT_POLICY=PASSIVE, and each benchmark repeats its
measurement in interleaved rounds and reports medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

# the 8B step compiled for TPU chips (deviceless: needs libtpu, no TPU; skipped, an earlier result kept, without it)
TPU_PLANS = {
    "memory_tpu_v5e8": [
        *("memory.py", "--target", "tpu-v5e-8", "--devices", "8", "--models", "llama3-8b"),
        *("--policies", "bfloat16", "lora", "mixed", "--remat", "full"),
    ],
    "memory_tpu_v5e16": [
        *("memory.py", "--target", "tpu-v5e-16", "--devices", "16", "--models", "llama3-8b"),
        *("--policies", "mixed", "--remat", "full"),
    ],
}

SETS = {
    "full": {
        "train_step_npo": ["train_step.py", "--shape", "llama-20m", "--objective", "NPO+GD", "--rounds", "3"],
        "train_step_me": ["train_step.py", "--shape", "llama-20m", "--objective", "ME+GD", "--rounds", "3"],
        "train_step_whole_logits": [
            *("train_step.py", "--shape", "llama-20m", "--objective", "NPO+GD", "--rounds", "3"),
            *("--vocab-block", "0"),
        ],
        "train_step_smollm2": ["train_step.py", "--shape", "smollm2-135m", "--objective", "NPO+GD", "--rounds", "3"],
        "train_step_smollm2_precomputed": [
            *("train_step.py", "--shape", "smollm2-135m", "--objective", "NPO+GD", "--rounds", "3"),
            "--precompute-reference",
        ],
        "eval_tofu": ["eval.py", "--rows", "20", "--rounds", "3", "--cached-cold"],
        "eval_tofu_memorized": [
            *("eval.py", "--rows", "20", "--rounds", "3", "--memorize", "10", "--answers-from-scoring", "true"),
        ],
        "floor_eval": ["floor.py", "--rows", "20"],
        "choice_wmdp": ["choice.py", "--task", "wmdp", "--questions", "1000", "--rounds", "3"],
        "choice_mmlu": ["choice.py", "--task", "mmlu", "--questions", "1000", "--rounds", "1"],
        **TPU_PLANS,
    },
    "quick": {
        "train_step_npo": ["train_step.py", "--shape", "llama-20m", "--objective", "NPO+GD", "--rounds", "3"],
        "train_step_whole_logits": [
            *("train_step.py", "--shape", "llama-20m", "--objective", "NPO+GD", "--rounds", "3"),
            *("--vocab-block", "0"),
        ],
        "train_step_smollm2": ["train_step.py", "--shape", "smollm2-135m", "--objective", "NPO+GD", "--rounds", "3"],
        "train_step_smollm2_precomputed": [
            *("train_step.py", "--shape", "smollm2-135m", "--objective", "NPO+GD", "--rounds", "3"),
            "--precompute-reference",
        ],
        "eval_tofu": ["eval.py", "--rows", "20", "--rounds", "3", "--cached-cold"],
        "eval_tofu_memorized": [
            *("eval.py", "--rows", "20", "--rounds", "3", "--memorize", "10", "--answers-from-scoring", "true"),
        ],
        "floor_eval": ["floor.py", "--rows", "20"],
        "choice_wmdp": ["choice.py", "--task", "wmdp", "--questions", "100", "--rounds", "3"],
        "choice_mmlu": ["choice.py", "--task", "mmlu", "--questions", "100", "--rounds", "1"],
        **TPU_PLANS,
    },
}


def run_entry(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, TQDM_DISABLE="1")
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:], "--json", str(out)], env=env)
        if proc.returncode:
            raise SystemExit(f"benchmarks/{' '.join(args)} failed (exit {proc.returncode})")
        return {
            "command": "python benchmarks/" + " ".join(args),
            "seconds": time.perf_counter() - t,
            "result": json.loads(out.read_text()),
        }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=sorted(SETS), default="full")
    p.add_argument("--only", nargs="+", help="entries to (re)run; the others are kept from --out")
    p.add_argument("--out", default=str(HERE / "results.json"))
    args = p.parse_args(argv)
    # set here, not only in the children's environment, so the recorded environment says so
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    entries = SETS[args.set]
    unknown = [n for n in args.only or [] if n not in entries]
    if unknown:
        raise SystemExit(f"unknown entries {unknown}; the {args.set} set has {', '.join(entries)}")
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {"entries": {}}
    results = previous if args.only else {"entries": {}}
    if not args.only or "set" not in results:  # a rerun of some entries keeps the set's name and environment
        results["set"] = args.set
    for name in args.only or entries:
        if name in TPU_PLANS and importlib.util.find_spec("libtpu") is None:
            if name in previous["entries"]:  # a whole set's run keeps it too
                results["entries"][name] = previous["entries"][name]
            kept = "its earlier result kept" if name in results["entries"] else "no result"
            print(f"== {name}: skipped, needs the libtpu module ({kept}); see benchmarks/memory.py", flush=True)
            continue
        print(f"== {name}: python benchmarks/{' '.join(entries[name])}", flush=True)
        environment = common.environment()  # git and CPU probes: once per entry
        results["entries"][name] = {**run_entry(entries[name]), "environment": environment}
        if not args.only or "environment" not in results:
            results["environment"] = environment
        out.write_text(json.dumps(results, indent=2) + "\n")  # after each entry: a crash keeps the rest
    print(f"results in {out}; now: python scripts/docs_benchmarks.py --write")
    return results


if __name__ == "__main__":
    main()
