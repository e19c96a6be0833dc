"""Every set number and aggregate from per-example records alone, without a model.

`evaluate_model` builds its summary with these functions, so `summarize(records)` of a
saved per_example.jsonl equals the evaluation's own summary; the same functions read
records converted from TOFU's eval logs and open-unlearning's TOFU_EVAL.json (`logs_io`).
The numbers are the registry's (`registry.SET_METRICS`, `registry.AGGREGATES`): a set
metric is computed when every record of its set has the fields it reads, so records
without MIA scores or generations aggregate what they have.
"""

from __future__ import annotations

from collections import defaultdict

from ..errors import DataError
from . import measures  # noqa: F401  (registers the built-in metrics)
from . import metrics as M
from .registry import AGGREGATES, SET_METRICS


def set_stats(name: str, recs: list[dict]) -> dict:
    """The numbers of one evaluation set from its records."""
    stats: dict = {"rows": len(recs)}
    for metric in SET_METRICS.values():
        if recs and all(r.get(f) is not None for r in recs for f in metric.fields):
            value = metric.compute(name, recs)
            if value is not None:
                stats[metric.name] = value
    return stats


def by_set(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["set"]].append(r)
    return dict(groups)


def aggregate(sets: dict, records: list[dict]) -> dict:
    """TOFU model utility (9), Closer Look model utility (18), forget efficacy, MIA AUCs."""
    out = {}
    for metric in AGGREGATES.values():
        value = metric.compute(sets, records)
        if value is not None:
            out[metric.name] = value
    return out


def summarize(records: list[dict]) -> dict:
    """{"sets": {name: numbers}, model utility, forget efficacy, MIA AUCs} from records."""
    sets = {name: set_stats(name, recs) for name, recs in by_set(records).items()}
    return {"sets": sets, **aggregate(sets, records)}


def check_same_forget_rows(mine: list[dict], theirs: list[dict], where: str) -> None:
    """Forget quality compares the same questions; refuse another split or other rows."""
    a = [r for r in mine if r["set"] == "forget"]
    b = [r for r in theirs if r["set"] == "forget"]
    if len(a) != len(b):
        raise DataError(
            f"the retain evaluation {where} has {len(b)} forget rows, this one {len(a)}: forget quality compares "
            "the same questions; evaluate the retain model on the same forget split and eval.num_rows"
        )
    qa = [r.get("question") for r in a]
    qb = [r.get("question") for r in b]
    if all(qa) and all(qb) and qa != qb:
        first = next(i for i, (x, y) in enumerate(zip(qa, qb)) if x != y)
        raise DataError(
            f"the retain evaluation {where} was computed on other forget questions (row {first}: {qb[first]!r} vs "
            f"{qa[first]!r}); evaluate the retain model on the same forget split"
        )


def forget_quality(
    summary: dict, records: list[dict], retain_records: list[dict], retain_summary: dict | None, where: str
) -> None:
    """Forget quality (KS p-value of forget-set truth ratios) and PrivLeak against a retain
    model's records (and its summary's MIA AUCs), added to `summary`."""
    check_same_forget_rows(records, retain_records, where)
    mine = [r["truth_ratio"] for r in records if r["set"] == "forget" and r.get("truth_ratio") is not None]
    theirs = [r["truth_ratio"] for r in retain_records if r["set"] == "forget" and r.get("truth_ratio") is not None]
    if not mine or not theirs:
        raise DataError(f"forget quality needs forget-set truth ratios in both evaluations ({where})")
    summary["forget_quality"] = M.forget_quality(mine, theirs)
    ref_auc = (retain_summary or {}).get("mia_auc") or {}
    if "mia_auc" in summary and ref_auc:
        summary["privleak"] = {
            a: M.privleak(v, ref_auc[a]) for a, v in summary["mia_auc"].items() if a in ref_auc and ref_auc[a] < 1.0
        }
