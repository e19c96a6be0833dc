"""The built-in evaluation metrics, registered on import (SPEC section 3). A new metric is
one function here or in its own file with one of the registry's decorators; the driver
(`evaluate.py`), the aggregation (`aggregate.py`) and the report pick it up."""

from __future__ import annotations

import numpy as np

from ..data.eval_sets import GT
from . import metrics as M
from .registry import aggregate_metric, example_metric, set_metric
from .sets import FORGET_LIKE, NORMALIZED, UTILITY_SETS

# --- per example ---------------------------------------------------------------------------


def _answer_rows(done):
    """(example index, index into done.scores) of each answer row."""
    return [(int(done.evalset.example[r]), i) for i, r in enumerate(np.flatnonzero(done.evalset.kind == GT))]


@example_metric(
    "memorization", "scores", "exact memorization and extraction strength of the answer (eval.memorization)"
)
def memorization(done):
    exact, extraction = M.MEMORIZATION[done.options.memorization]
    em, es = [None] * len(done.evalset), [None] * len(done.evalset)
    for ex, i in _answer_rows(done):
        em[ex], es[ex] = exact(done.scores.correct[i]), extraction(done.scores.correct[i])
    return {"exact_memorization": em, "extraction_strength": es}


@example_metric("mia", "scores", "membership-inference scores of the answer: LOSS, ZLib, Min-K%, Min-K%++")
def mia(done):
    out = [None] * len(done.evalset)
    for ex, i in _answer_rows(done):
        lp = done.scores.token_logp[i]
        out[ex] = {
            "loss": M.mia_loss(lp),
            "zlib": M.mia_zlib(lp, done.evalset.references[ex]),
            "min_k": M.mia_min_k(lp),
            "min_k_plus_plus": M.mia_min_k_plus_plus(lp, done.scores.mu[i], done.scores.sigma[i]),
        }
    return out


@example_metric("rougeL_recall", "generations", "ROUGE-L recall of the greedy answer against the answer")
def rouge(done):
    return done.rouge.tolist()


@example_metric("token_entropy", "generations", "unigram entropy of the greedy answer's tokens / log2 n")
def token_entropy(done):
    return [M.token_entropy(done.tokenizer.tokenize(g)) for g in done.generations]


@example_metric("cosine", "embeddings", "max(0, cos) of the sentence embeddings of answer and reference")
def cosine(done):
    return M.cosine_similarity(done.embedder.encode(done.generations), done.embedder.encode(done.references)).tolist()


@example_metric("entailment", "judge", "NLI judge's entailment flag, forced to 0 when ROUGE-L recall < 0.1")
def entailment(done):
    premises, hyps = (
        (done.generations, done.references) if done.kind == "forget" else (done.references, done.generations)
    )
    return M.entailment_flags(done.judge.labels(premises, hyps), done.rouge).astype(float).tolist()


# --- per set -------------------------------------------------------------------------------


def _values(recs, key):
    return np.array([r[key] for r in recs])


@set_metric(
    "probability",
    ("avg_nll",),
    "forget/retain: mean exp(-avgNLL); real authors / world facts: "
    "normalized over the answer and the perturbed answers",
)
def probability(name, recs):
    if name in NORMALIZED and all(r.get("avg_nll_perturbed") is not None for r in recs):
        return M.normalized_probability(_values(recs, "avg_nll"), _values(recs, "avg_nll_perturbed"))
    return M.probability(_values(recs, "avg_nll"))


@set_metric("rougeL_recall", ("rougeL_recall",), "mean ROUGE-L recall")
def rouge_mean(name, recs):
    return float(np.mean(_values(recs, "rougeL_recall")))


@set_metric("truth_ratio", ("truth_ratio",), "forget-like: mean min(R, 1/R); others: mean max(0, 1 - R)")
def truth_ratio(name, recs):
    r = _values(recs, "truth_ratio")
    return M.truth_ratio_forget(r) if name in FORGET_LIKE else M.truth_ratio_retain(r)


@set_metric("truth_ratio_closer_look", ("truth_ratio",), "forget-like sets: 1 - mean min(R, 1/R)", column=False)
def truth_ratio_closer_look(name, recs):
    return M.truth_ratio_forget_closer_look(_values(recs, "truth_ratio")) if name in FORGET_LIKE else None


def _mean_of(field: str, description: str, partial: bool = False):
    @set_metric(field, () if partial else (field,), description)
    def mean(name, recs):
        values = [r[field] for r in recs if r.get(field) is not None]
        return float(np.mean(values)) if values else None

    return mean


_mean_of("token_entropy", "mean token entropy of the greedy answers")
_mean_of("cosine", "mean cosine similarity")
_mean_of("entailment", "fraction of answers the judge labels entailed")
_mean_of("exact_memorization", "mean exact memorization (rows without a value left out)", partial=True)
_mean_of("extraction_strength", "mean extraction strength")

# --- over sets -----------------------------------------------------------------------------


@aggregate_metric(
    "model_utility",
    "probability, ROUGE-L, truth ratio x retain, real authors, world facts",
    "TOFU: harmonic mean of 9 numbers",
)
def model_utility(sets, records):
    nine = [sets.get(s, {}).get(k) for s in UTILITY_SETS for k in ("probability", "rougeL_recall", "truth_ratio")]
    return M.harmonic_mean(nine) if all(v is not None for v in nine) else None


@aggregate_metric(
    "model_utility_closer_look",
    "TOFU's 9 plus token entropy, cosine, entailment x the 3 sets",
    "Closer Look: harmonic mean of 18 numbers",
)
def model_utility_closer_look(sets, records):
    keys = ("rougeL_recall", "probability", "truth_ratio", "token_entropy", "cosine", "entailment")
    eighteen = [sets.get(s, {}).get(k) for s in UTILITY_SETS for k in keys]
    return M.harmonic_mean(eighteen) if all(v is not None for v in eighteen) else None


@aggregate_metric(
    "forget_efficacy", "forget ROUGE-L, probability, truth ratio (Closer Look), cosine, entailment", "1 - their mean"
)
def forget_efficacy(sets, records):
    f = sets.get("forget", {})
    fe = [f.get(k) for k in ("rougeL_recall", "probability", "truth_ratio_closer_look", "cosine", "entailment")]
    return 1.0 - float(np.mean(fe)) if all(v is not None for v in fe) else None


@aggregate_metric("mia_auc", "MIA scores of forget and holdout records", "AUC of forget vs holdout, per attack")
def mia_auc(sets, records):
    forget = [r["mia"] for r in records if r["set"] == "forget" and r.get("mia")]
    holdout = [r["mia"] for r in records if r["set"] == "holdout" and r.get("mia")]
    if not (forget and holdout):
        return None
    return {
        a: M.auc([x[a] for x in forget], [x[a] for x in holdout])
        for a in forget[0]
        if all(a in x for x in forget + holdout)
    }
