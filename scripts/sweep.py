#!/usr/bin/env python
"""Sweep methods x splits x seeds: unlearn, evaluate, and collect one results table.

    .venv/bin/python scripts/sweep.py --methods me_gd idk_ap npo_gd --splits forget01 forget05 \\
        --seeds 1001 1002 --out runs/sweep --retain-eval runs/retain_evals/{retain_split} [key=value ...]

Each method is a file of configs/paper/tofu/. A finished cell (its eval summary exists) is
skipped, so an interrupted sweep continues where it stopped. Writes results.csv and
results.md to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
COLUMNS = ("forget_quality", "model_utility", "forget_efficacy")


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    from jaxunlearn.config import load_config
    from jaxunlearn.errors import JaxUnlearnError
    from jaxunlearn.pipelines.evaluate import evaluate
    from jaxunlearn.pipelines.unlearn import unlearn

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--splits", nargs="+", default=["forget10"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1001])
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--retain-eval", help="retain model eval dir; {retain_split} is filled in per split")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = []
    try:
        for method in args.methods:
            path = REPO / "configs" / "paper" / "tofu" / f"{method}.yaml"
            for split in args.splits:
                for seed in args.seeds:
                    cell = out / f"{method}-{split}-s{seed}"
                    keys = [
                        f"data.forget_split={split}",
                        f"data.retain_split={RETAIN_OF[split]}",
                        f"train.seed={seed}",
                        f"output.dir={cell}",
                        *args.overrides,
                    ]
                    if args.retain_eval:
                        keys.append(f"eval.retain_eval={args.retain_eval.format(retain_split=RETAIN_OF[split])}")
                    summary_path = cell / "eval" / "summary.json"
                    if not summary_path.exists():
                        cfg = load_config(path, keys)
                        unlearn(cfg, overwrite=True)
                        eval_cfg = load_config(path, [*keys, f"model.path={cell / 'model'}"])
                        evaluate(eval_cfg, out_dir=cell / "eval")
                    s = json.loads(summary_path.read_text())
                    rows.append(
                        {
                            "method": method,
                            "split": split,
                            "seed": seed,
                            **{c: s.get(c) for c in COLUMNS},
                            "forget_probability": s["sets"].get("forget", {}).get("probability"),
                            "forget_rougeL": s["sets"].get("forget", {}).get("rougeL_recall"),
                        }
                    )
    except JaxUnlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    md = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    md += [
        "| " + " | ".join(f"{r[h]:.4g}" if isinstance(r[h], float) else str(r[h]) for h in header) + " |" for r in rows
    ]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
