"""Every metric of SPEC section 3 as plain numpy functions of per-example values."""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np

# --- probability and truth ratio ----------------------------------------------------------


def probability(avg_nll_gt: np.ndarray) -> float:
    """Forget/retain: mean exp(-avgNLL(answer))."""
    return float(np.mean(np.exp(-np.asarray(avg_nll_gt))))


def normalized_probability(avg_nll_gt: np.ndarray, avg_nll_perturbed: np.ndarray) -> float:
    """Real authors / world facts: mean e^-l_gt / (e^-l_gt + sum_j e^-l_pert,j)."""
    true = np.exp(-np.asarray(avg_nll_gt))
    false = np.exp(-np.asarray(avg_nll_perturbed)).sum(-1)
    return float(np.mean(true / (true + false)))


def truth_ratios(avg_nll_para: np.ndarray, avg_nll_perturbed: np.ndarray) -> np.ndarray:
    """R_i = exp(l_para - mean_j l_pert,j) = P_wrong / P_correct, per example."""
    return np.exp(np.asarray(avg_nll_para) - np.asarray(avg_nll_perturbed).mean(-1))


def truth_ratio_retain(ratios: np.ndarray) -> float:
    """Retain-like sets: mean max(0, 1 - R) (higher is better)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios))))


def truth_ratio_forget(ratios: np.ndarray) -> float:
    """TOFU's forget aggregation: mean min(R, 1/R)."""
    ratios = np.asarray(ratios)
    return float(np.mean(np.minimum(ratios, 1.0 / ratios)))


def truth_ratio_forget_closer_look(ratios: np.ndarray) -> float:
    """The Closer Look code reports 1 - mean min(R, 1/R) on the forget set."""
    return 1.0 - truth_ratio_forget(ratios)


def forget_quality(r_unlearned: np.ndarray, r_retain_model: np.ndarray) -> float:
    """p-value of a two-sided two-sample KS test of forget-set truth ratios."""
    from scipy.stats import ks_2samp  # here: scipy.stats takes 0.7 s to import, and most commands never call it

    return float(ks_2samp(np.asarray(r_unlearned), np.asarray(r_retain_model)).pvalue)


# --- generation metrics -------------------------------------------------------------------

_SCORER = None


def rouge_l_recall(generations: list[str], references: list[str]) -> np.ndarray:
    """ROUGE-L recall of each generation against its reference (rouge_score, stemmer)."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([_SCORER.score(ref, gen)["rougeL"].recall for gen, ref in zip(generations, references)])


def token_entropy(tokens: list[str]) -> float:
    """(-sum f log2 f) / log2 n over unigram frequencies of the n tokens; 0 if n <= 1."""
    n = len(tokens)
    if n <= 1:
        return 0.0
    freqs = np.array(list(Counter(tokens).values()), np.float64) / n
    return float(-(freqs * np.log2(freqs)).sum() / np.log2(n))


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """max(0, cos(first_i, second_i)) row by row."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return np.maximum(0.0, cos)


def entailment_flags(labels: list[str], rouge_recall: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """1 where the judge says 'entailment' and ROUGE-L recall >= 0.1 (else forced 'not entailed')."""
    return np.array([float(lab == "entailment" and r >= threshold) for lab, r in zip(labels, rouge_recall)])


# --- memorization -------------------------------------------------------------------------


def exact_memorization(correct: np.ndarray) -> float:
    """Fraction of answer tokens whose argmax next-token prediction is the true token."""
    correct = np.asarray(correct, bool)
    return float(correct.mean()) if correct.size else 0.0


def extraction_strength(correct: np.ndarray) -> float:
    """1 - k/n, k the shortest prefix after which greedy completion reproduces the rest.

    With teacher forcing, greedy completion after prefix k reproduces the rest exactly when
    every prediction from position k on is correct, so k = 1 + the last wrong position.
    """
    correct = np.asarray(correct, bool)
    n = correct.size
    if n == 0:
        return 0.0
    wrong = np.flatnonzero(~correct)
    k = 0 if wrong.size == 0 else int(wrong[-1]) + 1
    return 1.0 - k / n


def exact_memorization_open_unlearning(correct: np.ndarray) -> float | None:
    """open-unlearning's EM: the last supervised token (the EOS) left out; None when nothing
    is left (it then drops the row from the mean)."""
    correct = np.asarray(correct, bool)[:-1]
    return float(correct.mean()) if correct.size else None


def extraction_strength_open_unlearning(correct: np.ndarray) -> float:
    """open-unlearning's ES: the EOS left out, and when no suffix matches (the last token is
    wrong) its search loop ends at k = n - 1, so 1/n, not 0."""
    correct = np.asarray(correct, bool)[:-1]
    n = correct.size
    if n == 0:
        return 0.0
    wrong = np.flatnonzero(~correct)
    k = 0 if wrong.size == 0 else int(wrong[-1]) + 1
    return 1.0 - min(k, n - 1) / n


MEMORIZATION = {  # eval.memorization -> (exact memorization, extraction strength)
    "clean": (exact_memorization, extraction_strength),
    "open_unlearning": (exact_memorization_open_unlearning, extraction_strength_open_unlearning),
}


# --- membership inference -----------------------------------------------------------------


def mia_loss(token_logp: np.ndarray) -> float:
    return float(-np.mean(token_logp)) if len(token_logp) else 0.0


def mia_zlib(token_logp: np.ndarray, text: str) -> float:
    return float(-np.sum(token_logp) / len(zlib.compress(text.encode("utf-8"))))


def mia_min_k(token_logp: np.ndarray, fraction: float = 0.4) -> float:
    """-(mean of the lowest `fraction` (Min-K%'s k) of token log-probs): higher means less
    likely a member."""
    lowest = np.sort(np.asarray(token_logp))
    count = max(1, int(len(lowest) * fraction))
    return float(-lowest[:count].mean())


def mia_min_k_plus_plus(token_logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, fraction: float = 0.4) -> float:
    """Min-K% on log-probs standardized by the next-token distribution's mean and std."""
    standardized = (np.asarray(token_logp) - np.asarray(mu)) / np.maximum(np.asarray(sigma), 1e-12)
    return mia_min_k(standardized, fraction)


def auc(forget_scores: np.ndarray, holdout_scores: np.ndarray) -> float:
    """P(holdout score > forget score) with ties counted half (Mann-Whitney U / n1 n2).

    Scores are loss-like (higher = less likely a training member), so a model that still
    memorizes the forget set has AUC near 1, and a model never trained on it near 0.5.
    """
    f = np.asarray(forget_scores, np.float64)[:, None]
    h = np.asarray(holdout_scores, np.float64)[None, :]
    return float(((h > f).sum() + 0.5 * (h == f).sum()) / (f.size * h.size))


def privleak(auc_model: float, auc_retain_model: float) -> float:
    """((1 - AUC) - (1 - AUC_retain)) / (1 - AUC_retain) * 100 (SPEC section 3)."""
    return ((1.0 - auc_model) - (1.0 - auc_retain_model)) / (1.0 - auc_retain_model) * 100.0


# --- aggregates ---------------------------------------------------------------------------


def harmonic_mean(values) -> float:
    values = np.asarray(list(values), np.float64)
    if values.size == 0 or np.any(values <= 0):
        return 0.0
    return float(values.size / np.sum(1.0 / values))
