"""Every set number and aggregate from per-example records alone, without a model.

`evaluate_model` builds its summary with these functions, so `aggregate(records)` of a
saved per_example.jsonl equals the evaluation's own summary; the same functions read
records converted from TOFU's eval logs and open-unlearning's TOFU_EVAL.json (`logs_io`).
A record holds what its set was scored for; a number is computed when every record of its
set has the fields it needs (no MIA scores, no generations: those numbers are left out).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..errors import DataError
from . import metrics as M

FORGET_LIKE = ("forget", "holdout")  # truth ratio aggregated as TOFU's forget set
NORMALIZED = ("real_authors", "world_facts")  # probability normalized over the perturbed answers
UTILITY_SETS = ("retain", "real_authors", "world_facts")
MEAN_FIELDS = ("exact_memorization", "extraction_strength", "rougeL_recall", "token_entropy", "cosine", "entailment")


def _have(recs, key) -> bool:
    return bool(recs) and all(r.get(key) is not None for r in recs)


def set_stats(name: str, recs: list[dict]) -> dict:
    """The numbers of one evaluation set from its records."""
    stats: dict = {"rows": len(recs)}
    if _have(recs, "avg_nll"):
        gt = np.array([r["avg_nll"] for r in recs])
        if name in NORMALIZED and _have(recs, "avg_nll_perturbed"):
            stats["probability"] = M.normalized_probability(gt, np.array([r["avg_nll_perturbed"] for r in recs]))
        else:
            stats["probability"] = M.probability(gt)
    if _have(recs, "truth_ratio"):
        r = np.array([x["truth_ratio"] for x in recs])
        if name in FORGET_LIKE:
            stats["truth_ratio"] = M.truth_ratio_forget(r)
            stats["truth_ratio_closer_look"] = M.truth_ratio_forget_closer_look(r)
        else:
            stats["truth_ratio"] = M.truth_ratio_retain(r)
    for key in MEAN_FIELDS:
        values = [r[key] for r in recs if r.get(key) is not None]
        if values and (key in ("exact_memorization",) or len(values) == len(recs)):
            stats[key] = float(np.mean(values))  # EM: rows without a value (open-unlearning's None) left out
    return stats


def by_set(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["set"]].append(r)
    return dict(groups)


def aggregate(sets: dict, records: list[dict]) -> dict:
    """TOFU model utility (9), Closer Look model utility (18), forget efficacy, MIA AUCs."""
    out: dict = {}
    if all(s in sets for s in UTILITY_SETS):
        nine = [sets[s].get(k) for s in UTILITY_SETS for k in ("probability", "rougeL_recall", "truth_ratio")]
        if all(v is not None for v in nine):
            out["model_utility"] = M.harmonic_mean(nine)
        keys18 = ("rougeL_recall", "probability", "truth_ratio", "token_entropy", "cosine", "entailment")
        eighteen = [sets[s].get(k) for s in UTILITY_SETS for k in keys18]
        if all(v is not None for v in eighteen):
            out["model_utility_closer_look"] = M.harmonic_mean(eighteen)
    f = sets.get("forget", {})
    fe = [f.get(k) for k in ("rougeL_recall", "probability", "truth_ratio_closer_look", "cosine", "entailment")]
    if all(v is not None for v in fe):
        out["forget_efficacy"] = 1.0 - float(np.mean(fe))
    forget = [r["mia"] for r in records if r["set"] == "forget" and r.get("mia")]
    holdout = [r["mia"] for r in records if r["set"] == "holdout" and r.get("mia")]
    if forget and holdout:
        out["mia_auc"] = {a: M.auc([x[a] for x in forget], [x[a] for x in holdout])
                          for a in forget[0] if all(a in x for x in forget + holdout)}
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


def forget_quality(summary: dict, records: list[dict], retain_records: list[dict], retain_summary: dict | None,
                   where: str) -> None:
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
        summary["privleak"] = {a: M.privleak(v, ref_auc[a]) for a, v in summary["mia_auc"].items()
                               if a in ref_auc and ref_auc[a] < 1.0}
