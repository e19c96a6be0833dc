"""MUSE and multiple-choice results as files: summary.json, per_example.jsonl, report.md,
a bar plot, open-unlearning's MUSE_EVAL.json; and several runs side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

MUSE_COLUMNS = (
    "forget_verbmem_ROUGE",
    "forget_knowmem_ROUGE",
    "retain_knowmem_ROUGE",
    "privleak",
    "extraction_strength",
    "exact_memorization",
)


def headline(summary: dict) -> dict[str, float]:
    """The numbers a table shows, by column name."""
    if summary.get("benchmark") == "muse":
        return {k: summary[k] for k in MUSE_COLUMNS if k in summary}
    out = {}
    for task, r in (summary.get("tasks") or {}).items():
        out[f"{task} acc"] = r["acc"]
    for task, metrics in (summary.get("lm_eval") or {}).items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and "stderr" not in metric:
                out[f"{task} {metric}"] = value
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown(summary: dict, title: str = "") -> str:
    lines = [f"## {title}" if title else "", ""]
    if summary.get("benchmark") == "muse":
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in headline(summary).items()]
        for key, value in summary.items():
            if key.startswith("mia_"):
                lines.append(f"| {key} AUC | {_fmt(value['auc'])} |")
        if "privleak" in summary:
            lines += [
                "",
                f"PrivLeak reference AUC {_fmt(summary['privleak_reference_auc'])} ({summary['privleak_reference']}).",
            ]
        return "\n".join(lines) + "\n"
    lines += ["| task | questions | acc | ± stderr | acc_norm |", "|---|---|---|---|---|"]
    for task, r in (summary.get("tasks") or {}).items():
        lines.append(f"| {task} | {r['n']} | {_fmt(r['acc'])} | {_fmt(r['acc_stderr'])} | {_fmt(r['acc_norm'])} |")
        for subject, s in (r.get("subjects") or {}).items():
            lines.append(f"| &nbsp;&nbsp;{subject} | {s['n']} | {_fmt(s['acc'])} | | |")
    if summary.get("lm_eval"):
        lines += ["", "| lm-eval task | metric | value |", "|---|---|---|"]
        for task, metrics in summary["lm_eval"].items():
            for metric, value in metrics.items():
                if "stderr" not in metric:
                    lines.append(f"| {task} | {metric} | {_fmt(value)} |")
    return "\n".join(lines) + "\n"


def muse_eval_json(summary: dict, records: list[dict]) -> dict:
    """open-unlearning's MUSE_EVAL.json: per metric agg_value and value_by_index."""
    out = {}
    for name in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE"):
        if name in summary:
            part = name.rsplit("_", 1)[0]
            rows = [r for r in records if r["set"] == part]
            out[name] = {
                "agg_value": summary[name],
                "value_by_index": {
                    str(r["index"]): {
                        k: r[k] for k in ("rouge1_recall", "rougeL_f1", "rougeL_recall", "generation", "ground_truth")
                    }
                    for r in rows
                },
            }
    for name in ("extraction_strength", "exact_memorization"):
        if name in summary:
            rows = [r for r in records if r["set"] == "verbmem_memorization"]
            out[name] = {
                "agg_value": summary[name],
                "value_by_index": {str(r["index"]): {"score": r[name]} for r in rows},
            }
    for key, value in summary.items():
        if key.startswith("mia_"):
            out[key] = {"agg_value": value["auc"], "auc": value["auc"]}
    if "privleak" in summary:
        out["privleak"] = {"agg_value": summary["privleak"]}
    return out


def write_results(out_dir: Path, records: list[dict], summary: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "per_example.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.rename(out_dir / "per_example.jsonl")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    title = f"{summary['benchmark'].upper()} evaluation of {summary.get('model', '')}"
    (out_dir / "report.md").write_text(markdown(summary, title))
    if summary["benchmark"] == "muse":
        (out_dir / "MUSE_EVAL.json").write_text(json.dumps(muse_eval_json(summary, records), indent=2) + "\n")
    plot([("", summary)], out_dir / "metrics.png")


def plot(rows: list[tuple[str, dict]], path: Path) -> None:
    """Bars per headline number, one colour per run (PrivLeak on its own axis: a percentage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for _, s in rows for k in headline(s)))
    scaled = [k for k in keys if k == "privleak"]
    keys = [k for k in keys if k not in scaled]
    fig, axes = plt.subplots(
        1,
        2 if scaled else 1,
        figsize=(9 if scaled else 7, 3.5),
        gridspec_kw={"width_ratios": [4, 1]} if scaled else None,
        squeeze=False,
    )
    width = 0.8 / max(len(rows), 1)
    for ax, names in zip(axes[0], (keys, scaled)):
        for k, (label, s) in enumerate(rows):
            h = headline(s)
            ax.bar(np.arange(len(names)) + k * width, [h.get(n, np.nan) for n in names], width, label=label or None)
        ax.set_xticks(
            np.arange(len(names)) + width * (len(rows) - 1) / 2, [n.replace("_", "\n", 1) for n in names], fontsize=7
        )
    axes[0][0].set_ylim(0, 1.05)
    if len(rows) > 1:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(rows: list[tuple[str, dict]], out: Path | None = None) -> str:
    keys = list(dict.fromkeys(k for _, s in rows for k in headline(s)))
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, s in rows:
        h = headline(s)
        lines.append(f"| {label} | " + " | ".join(_fmt(h.get(k)) for k in keys) + " |")
    table = "\n".join(lines) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(table)
        plot(rows, out / "comparison.png")
    return table
