"""The robustness summary: each attack's forget metrics before and after, and how far
they went back toward the model before unlearning (the recovery ratio)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# (metric key in an attack's result, label): the forget-side numbers an attack may bring back
FORGET_METRICS = (("forget_probability", "forget probability"), ("forget_rougeL_recall", "forget ROUGE-L recall"))


def recovery_ratio(after: float | None, unlearned: float | None, target: float | None) -> float | None:
    """(after - unlearned) / (target - unlearned): 0 = the attack recovered nothing, 1 = all
    the way back to the model before unlearning. None when a value is missing or the
    unlearning moved the metric by less than 1e-6 (nothing to recover)."""
    if after is None or unlearned is None or target is None or abs(target - unlearned) < 1e-6:
        return None
    return (after - unlearned) / (target - unlearned)


def robustness_rows(results: list[dict], unlearned: dict, target: dict | None) -> list[dict]:
    """One row per attack result: its name, each forget metric after, and its recovery ratio."""
    rows = []
    for r in results:
        row = {"attack": r["attack"]}
        for key, _ in FORGET_METRICS:
            row[key] = r.get(key)
            row[f"{key}_recovery"] = recovery_ratio(r.get(key), unlearned.get(key), (target or {}).get(key))
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown(summary: dict) -> str:
    """The table of summary.json: reference models first, then each attack with its
    recovery and, where the attack touched the weights, the retain probability it left."""
    keys = [k for k, _ in FORGET_METRICS]
    head = ["model / attack", *[label for _, label in FORGET_METRICS], "recovery (prob)", "recovery (ROUGE)"]
    head.append("retain probability")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in ("target", "retain", "unlearned"):
        ref = summary["references"].get(name)
        if ref:
            cells = [name, *[_fmt(ref.get(k)) for k in keys], "", "", _fmt(ref.get("retain_probability"))]
            lines.append("| " + " | ".join(cells) + " |")
    by_name = {r["attack"]: r for r in summary.get("attacks", [])}
    for row in summary["rows"]:
        cells = [row["attack"], *[_fmt(row.get(k)) for k in keys], *[_fmt(row.get(f"{k}_recovery")) for k in keys]]
        cells.append(_fmt(by_name.get(row["attack"], {}).get("retain_probability")))
        lines.append("| " + " | ".join(cells) + " |")
    for key, whose in (("extraction", "unlearned"), ("extraction_target", "target")):
        extract = summary.get(key)
        if extract:
            lines.append("")
            lines.append(
                f"Extraction from the {whose} model ({extract['samples']} samples per question at temperature "
                f"{extract['temperature']:g}; recovered = ROUGE-L recall >= {extract['threshold']:g}): "
                f"{extract['recovered']:.0%} of forget answers recovered by sampling, "
                f"{extract['greedy_recovered']:.0%} by greedy decoding (best sample's mean ROUGE-L "
                f"{extract['best_rouge']:.3f})."
            )
    for note in summary.get("notes", []):
        lines += ["", f"Note: {note}."]
    return "\n".join(lines) + "\n"


def compare_markdown(summaries: dict[str, dict]) -> str:
    """Several methods' robustness side by side: per attack, each method's forget
    probability after it and (in parentheses) its recovery ratio."""
    methods = list(summaries)
    attacks = []
    for s in summaries.values():
        attacks += [r["attack"] for r in s["rows"] if r["attack"] not in attacks]
    lines = ["| attack | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for ref in ("target", "unlearned"):
        cells = [_fmt((s["references"].get(ref) or {}).get("forget_probability")) for s in summaries.values()]
        lines.append(f"| {ref} (no attack) | " + " | ".join(cells) + " |")
    for attack in attacks:
        cells = []
        for s in summaries.values():
            row = next((r for r in s["rows"] if r["attack"] == attack), None)
            cells.append(
                "—"
                if row is None
                else f"{_fmt(row.get('forget_probability'))} ({_fmt(row.get('forget_probability_recovery'))})"
            )
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    cells = [_fmt((s.get("extraction") or {}).get("recovered")) for s in summaries.values()]
    if any(c != "—" for c in cells):
        lines.append("| extraction: share recovered by sampling | " + " | ".join(cells) + " |")
    return "Forget probability after each attack (recovery ratio toward the target):\n\n" + "\n".join(lines) + "\n"


def plot(summaries: dict[str, dict], out: Path) -> Path:
    """One panel per attack family, methods side by side: forget probability after each
    attack (bars), the unlearned model's value (dots) and the target's (dashed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(dict.fromkeys(row["attack"] for s in summaries.values() for row in s["rows"]))  # as run
    families = list(dict.fromkeys(a.split(":")[0] for a in order))
    fig, axes = plt.subplots(1, max(len(families), 1), figsize=(3.2 * max(len(families), 1), 3.2), squeeze=False)
    for ax, family in zip(axes[0], families):
        attacks = [a for a in order if a.split(":")[0] == family]
        width = 0.8 / max(len(summaries), 1)
        for k, (method, s) in enumerate(summaries.items()):
            by_attack = {row["attack"]: row for row in s["rows"]}
            values = [by_attack.get(a, {}).get("forget_probability") for a in attacks]
            values = [np.nan if v is None else v for v in values]
            x = np.arange(len(attacks)) + k * width
            ax.bar(x, values, width, label=method)
            base = s["references"]["unlearned"].get("forget_probability")
            ax.plot(x, [base] * len(attacks), "k.", markersize=4)
            target = (s["references"].get("target") or {}).get("forget_probability")
            if target is not None:
                ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xticks(np.arange(len(attacks)) + width * (len(summaries) - 1) / 2)
        ax.set_xticklabels([a.split(":", 1)[-1] for a in attacks], rotation=30, ha="right", fontsize=7)
        ax.set_title(family, fontsize=9)
        ax.set_ylabel("forget probability", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=max(len(labels), 1), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
