"""Write evaluation results: JSON Lines, summary JSON, a markdown table and PNG plots;
and put several runs side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .aggregate import SET_METRICS
from .logs_io import PER_EXAMPLE, SUMMARY, write_open_unlearning

# the per-set table's columns: the registry's set metrics (measures.py registers them)
COLUMNS = tuple(m.name for m in SET_METRICS.values() if m.column)
HEADLINE = ("forget_quality", "model_utility", "model_utility_closer_look", "forget_efficacy")


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def markdown_table(summary: dict, title: str = "") -> str:
    lines = [
        f"## {title}" if title else "",
        "",
        "| set | rows | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for name, stats in summary["sets"].items():
        lines.append(f"| {name} | {stats['rows']} | " + " | ".join(_fmt(stats.get(c)) for c in COLUMNS) + " |")
    lines += ["", "| headline | value |", "|---|---|"]
    for key in HEADLINE:
        if key in summary:
            lines.append(f"| {key} | {_fmt(summary[key])} |")
    for key in ("mia_auc", "privleak"):
        for attack, v in (summary.get(key) or {}).items():
            lines.append(f"| {key} ({attack}) | {_fmt(v)} |")
    for key in ("embedding_model", "nli_judge"):
        if key in summary:
            lines.append(f"| {key} | {summary[key]} |")
    for task, metrics in (summary.get("lm_eval") or {}).items():  # general utility through lm-eval
        lines += [f"| lm-eval {task} {metric} | {_fmt(v)} |" for metric, v in metrics.items() if "stderr" not in metric]
    return "\n".join(lines) + "\n"


def write_eval(out_dir: Path, records: list[dict], summary: dict, retain_records: list[dict] | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (PER_EXAMPLE + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.rename(out_dir / PER_EXAMPLE)
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_table(summary, f"Evaluation of {summary.get('model', '')}"))
    write_open_unlearning(out_dir, records, summary)  # TOFU_EVAL.json / TOFU_SUMMARY.json for their scripts
    plot_sets(summary, out_dir / "metrics.png")
    plot_truth_ratios(records, retain_records, out_dir / "truth_ratio.png")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sets(summary: dict, path: Path) -> None:
    plt = _plt()
    sets = list(summary["sets"])
    cols = [c for c in COLUMNS[:6] if any(c in summary["sets"][s] for s in sets)]
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 3, 3.5))
    width = 0.8 / max(len(sets), 1)
    for k, s in enumerate(sets):
        vals = [summary["sets"][s].get(c, np.nan) for c in cols]
        ax.bar(np.arange(len(cols)) + k * width, vals, width, label=s)
    ax.set_xticks(np.arange(len(cols)) + width * (len(sets) - 1) / 2, cols, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("metrics per evaluation set")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_truth_ratios(records: list[dict], retain_records: list[dict] | None, path: Path) -> None:
    mine = [r["truth_ratio"] for r in records if r["set"] == "forget" and "truth_ratio" in r]
    if not mine:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, max(2.0, float(np.max(mine))), 30)
    ax.hist(mine, bins=bins, alpha=0.6, label="this model")
    if retain_records:
        theirs = [r["truth_ratio"] for r in retain_records if r["set"] == "forget" and "truth_ratio" in r]
        ax.hist(theirs, bins=bins, alpha=0.6, label="retain model")
    ax.set_xlabel("forget-set truth ratio R = P_wrong / P_correct")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_summary(path: Path) -> dict:
    """A jaxunlearn summary.json, checked enough that a report can be made from it."""
    from ..errors import DataError

    try:
        summary = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); re-run the evaluation or pass another directory") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("sets"), dict):
        raise DataError(
            f"{path} is not a jaxunlearn evaluation summary (no 'sets' table); give report the directory of a "
            "jaxunlearn eval, or --recompute for TOFU / open-unlearning logs"
        )
    return summary


def run_labels(run_dirs: list[str]) -> list[str]:
    """Names that tell runs apart: the path parts left once the parts every run shares at
    the start and at the end are dropped (runs/x/GA/eval, runs/x/NPO/eval -> GA, NPO)."""
    parts = [Path(d).absolute().parts for d in run_dirs]
    if len(parts) == 1:
        p = parts[0]
        return [p[-2] if p[-1] in GENERIC_NAMES and len(p) > 1 else p[-1]]
    distinct = len(set(parts)) > 1  # the same directory twice: its name, numbered
    while distinct and all(len(p) > 1 for p in parts) and len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
    start = 0
    while all(len(p) > start + 1 for p in parts) and len({p[start] for p in parts}) == 1:
        start += 1
    labels = ["/".join(p[start:]) for p in parts]
    return [label if labels.count(label) == 1 else f"{label} ({k + 1})" for k, label in enumerate(labels)]


GENERIC_NAMES = {"eval", "evaluation", "results"}


def compare_runs(
    run_dirs: list[str], out: Path | None = None, summaries: list[dict] | None = None, labels: list[str] | None = None
) -> str:
    """A side-by-side markdown table (and bar plot) of several evaluation directories, from
    their summary.json or from the given summaries (one per directory). Rows are named by
    `labels`, else by what tells the directories apart (`run_labels`)."""
    from ..errors import ConfigError

    if labels is not None and len(labels) != len(run_dirs):
        raise ConfigError(f"{len(labels)} labels for {len(run_dirs)} runs: give one --label per run, in order")
    names = list(labels) if labels is not None else run_labels(run_dirs)
    rows = []
    for k, d in enumerate(run_dirs):
        if summaries is not None:
            rows.append((names[k], summaries[k]))
            continue
        path = Path(d) / SUMMARY
        if not path.exists():
            path = Path(d) / "eval" / SUMMARY
        if not path.exists():
            raise ConfigError(f"no evaluation summary in {d} (expected {SUMMARY}); run jaxunlearn eval first")
        rows.append((names[k], read_summary(path)))
    keys = [("forget", c) for c in ("probability", "rougeL_recall", "truth_ratio")]
    keys += [("retain", c) for c in ("probability", "rougeL_recall", "truth_ratio")]
    header = ["run", *[f"{s} {c}" for s, c in keys], *HEADLINE]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, s in rows:
        vals = [s["sets"].get(st, {}).get(c) for st, c in keys] + [s.get(h) for h in HEADLINE]
        lines.append("| " + " | ".join([name, *map(_fmt, vals)]) + " |")
    table = "\n".join(lines) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(table)
        plt = _plt()
        fig, ax = plt.subplots(figsize=(8, 3.5))
        width = 0.8 / len(rows)
        labels = [f"{s}\n{c}" for s, c in keys]
        for k, (name, s) in enumerate(rows):
            vals = [s["sets"].get(st, {}).get(c, np.nan) for st, c in keys]
            ax.bar(np.arange(len(keys)) + k * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(keys)) + width * (len(rows) - 1) / 2, labels, fontsize=7)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "comparison.png", dpi=100)
        plt.close(fig)
    return table
