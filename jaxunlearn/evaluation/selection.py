"""Choosing among the evaluations of one run's steps: the best by a criterion, or the one
at a given utility drop, so methods are compared at the same cost, not at different points
of their trade-off (Liu et al.)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ConfigError, DataError

CRITERION = re.compile(r"^(min|max):([\w.]+)$")


def lookup(summary: dict, key: str) -> float | None:
    """A headline number (forget_quality, model_utility) or a set's (forget.probability)."""
    if "." in key:
        name, metric = key.split(".", 1)
        value = summary.get("sets", {}).get(name, {}).get(metric)
    else:
        value = summary.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def step_evaluations(run_dir: str | Path) -> list[tuple[int, Path, dict]]:
    """(step, directory, summary) of every eval/step_K of an unlearn run, by step."""
    found = []
    for d in Path(run_dir).glob("eval/step_*"):
        if d.name.removeprefix("step_").isdigit() and (d / "summary.json").is_file():
            found.append((int(d.name.removeprefix("step_")), d, json.loads((d / "summary.json").read_text())))
    if not found:
        raise DataError(
            f"{run_dir} holds no evaluations of its steps (eval/step_K/summary.json): unlearn with "
            "eval.every_steps=K (and eval.keep_models=true to keep each step's model)"
        )
    return sorted(found, key=lambda x: x[0])


def pick_best(candidates: list[tuple[int, Path, dict]], criterion: str) -> dict:
    """{step, dir, value, criterion} of the candidate best by `criterion` ("max:KEY" / "min:KEY")."""
    m = CRITERION.match(criterion)
    if not m:
        raise ConfigError(f"eval.best_by={criterion!r}: write max:KEY or min:KEY, e.g. max:forget_quality")
    direction, key = m.groups()
    scored = [(lookup(s, key), step, d) for step, d, s in candidates]
    scored = [x for x in scored if x[0] is not None]
    if not scored:
        raise DataError(f"no evaluation of the run has {key!r}; check the key (a headline or SET.METRIC)")
    value, step, d = (max if direction == "max" else min)(scored, key=lambda x: (x[0], -x[1]))
    return {"step": step, "dir": str(d), "value": value, "criterion": criterion}


def pick_at_utility_drop(candidates, baseline_utility: float, drop: float, metric: str) -> dict:
    """The candidate whose relative utility drop (baseline - utility) / baseline is closest
    to `drop` (ties: the earlier step)."""
    if not baseline_utility:
        raise DataError(f"the baseline's {metric} is {baseline_utility}: a relative drop needs a positive baseline")
    scored = []
    for step, d, s in candidates:
        value = lookup(s, metric)
        if value is not None:
            scored.append((abs((baseline_utility - value) / baseline_utility - drop), step, d, value))
    if not scored:
        raise DataError(f"no evaluation of the run has the utility {metric!r}")
    gap, step, d, value = min(scored, key=lambda x: (x[0], x[1]))
    return {
        "step": step,
        "dir": str(d),
        "utility": value,
        "utility_drop": (baseline_utility - value) / baseline_utility,
    }
