"""Chen et al.'s framework in one command: flag -> unlearn -> judge again and evaluate.

The model answers the prompts and the judges flag what to unlearn (`flag`); the flagged
dialogues are unlearned with the configured objective (DIST+GD in the presets) keeping the
others; the unlearned model answers the same prompts and is judged again; both models are
evaluated on the flagged and unflagged sets. The summary reports the share flagged before
and after, per category, and the retain numbers (utility) before and after."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..config import RunConfig
from ..errors import DataError
from ..paths import check_writable_dir
from .evaluate import evaluate
from .flag import flag
from .unlearn import unlearn
from ..storage import stages_url_output


def _with(cfg: RunConfig, **sections) -> RunConfig:
    """A copy of cfg with some sections' fields replaced: _with(cfg, data={"source": "files"})."""
    changed = {name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    return dataclasses.replace(cfg, **changed)


@stages_url_output("chen")
def run_chen(cfg: RunConfig, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    t0 = time.perf_counter()
    out = check_writable_dir(Path(out_dir) if out_dir else cfg.output_dir("chen"), "output.dir")
    before = flag(cfg, out / "flag_before", progress)
    if not before["flagged"]:
        raise DataError(f"no output of {cfg.model.path} was flagged: nothing to unlearn (see {out / 'flag_before'})")
    if before["flagged"] == before["rows"]:
        raise DataError("every output was flagged: no retain set is left for the normal loss; loosen the judges")
    files = {"source": "files", "forget_file": str(out / "flag_before" / "forget.jsonl")}
    files["retain_file"] = str(out / "flag_before" / "retain.jsonl")
    unlearn_cfg = _with(cfg, data=files, output={"dir": str(out / "unlearn")})
    trained = unlearn(unlearn_cfg, overwrite=True, progress=progress)
    after = flag(_with(cfg, model={"path": str(out / "unlearn" / "model")}), out / "flag_after", progress)
    evals = {}
    for name, path in (("before", cfg.model.path), ("after", str(out / "unlearn" / "model"))):
        evals[name] = evaluate(
            _with(unlearn_cfg, model={"path": path}), out_dir=out / f"eval_{name}", progress=progress
        )
    summary = {
        "model": str(cfg.model.path),
        "objective": cfg.objective.name,
        "steps": trained["steps"],
        "share_flagged": {"before": before["share_flagged"], "after": after["share_flagged"]},
        "by_category": {"before": before["by_category"], "after": after["by_category"]},
        "sets": {name: e["sets"] for name, e in evals.items()},
        "seconds": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report(summary))
    return summary


def report(summary: dict) -> str:
    cats = sorted(set(summary["by_category"]["before"]) | set(summary["by_category"]["after"]))
    share, count = summary["share_flagged"], summary["by_category"]
    lines = [
        f"# {summary['objective']} on the flagged outputs of {summary['model']}",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| share of outputs flagged | {share['before']:.0%} | {share['after']:.0%} |",
        *[f"| flagged as {c} | {count['before'].get(c, 0)} | {count['after'].get(c, 0)} |" for c in cats],
    ]
    for s in ("forget", "retain"):
        for metric in ("probability", "rougeL_recall"):
            b, a = (summary["sets"][w].get(s, {}).get(metric) for w in ("before", "after"))
            if b is not None and a is not None:
                lines.append(f"| {'flagged' if s == 'forget' else 'unflagged'} set {metric} | {b:.4g} | {a:.4g} |")
    return "\n".join(lines) + "\n"
