"""The first tokens of greedy answers, known from scoring before any decoding.

Scoring a set's reference answer computes, at each of its tokens, the model's next-token
distribution given the prompt and the reference's earlier tokens: the very step greedy
decoding takes while its answer still follows the reference. So a greedy answer starts
with the reference's tokens up to the first whose argmax is not the reference's (clearly,
`kernels.CLEAR_ULPS`: a near tie is left to decoding), and its decoding resumes there
(`kernels.generate_texts(known=...)`). A model that reproduces its training answers (a
TOFU target model on every set, an unlearned one on retain) then needs few decoding
steps, or none where the whole reference and its EOS are known. The answers are the ones
decoding from the prompt gives; only fp32 models qualify, whose two passes round alike
to far below the margin."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

from ..data.eval_sets import GT, EvalSet
from ..models.config import to_dtype
from .config import check_answer_order
from .kernels import RowScores, supervised_tokens
from .overlap import overlaps_generation

log = logging.getLogger(__name__)


def uses_known_answers(setting: bool | None, overlap_setting: bool | None, overlapping: bool) -> bool:
    """Whether answers start from what scoring showed: `setting`, or (None) whenever
    generation runs after scoring anyway (not beside it, `overlap.overlaps_generation`).
    True with eval.overlap_generation=true is refused: the answers cannot wait for the
    scores and run beside them."""
    check_answer_order(setting, overlap_setting)
    return not overlapping if setting is None else setting


def answer_order(setting: bool | None, overlap_setting: bool | None, mesh, compute_dtype) -> tuple[bool, bool]:
    """(decoded beside scoring, started from scoring) for an evaluation's answers, from the
    two settings, where the model runs and its compute dtype: answers from scoring need an
    fp32 model (bf16 passes round too differently), and then wait for the scores."""
    overlap = overlaps_generation(overlap_setting, mesh)
    from_scoring = uses_known_answers(setting, overlap_setting, overlap)
    if from_scoring and to_dtype(compute_dtype) != jnp.float32:
        log.info("answers decoded from their prompts: eval.answers_from_scoring needs an fp32 model")
        from_scoring = False
    return overlap and not from_scoring, from_scoring


def known_prefixes(evalset: EvalSet, answer_scores: RowScores, eos_ids) -> list[np.ndarray]:
    """Per question, the tokens its greedy answer is known to start with (ending with an EOS
    when the whole answer is known). `answer_scores`: the reference answers' full
    statistics, in question order (`evaluate.score_candidates`)."""
    eos = set(np.atleast_1d(eos_ids).tolist())
    answers = np.flatnonzero(evalset.kind == GT)
    return [
        _known(evalset.prompts[q], evalset.candidates, int(row), answer_scores.clear[q], eos)
        for q, row in enumerate(answers)
    ]


def _known(prompt: np.ndarray, rows, row: int, clear: np.ndarray, eos: set) -> np.ndarray:
    ids = rows.ids[row]
    width = len(prompt)
    none = np.zeros(0, np.int32)
    if len(ids) <= width or not np.array_equal(ids[:width], prompt):
        return none  # the scored text does not begin with the generation prompt's tokens
    scored = supervised_tokens(rows, row)  # token indices that `clear` speaks for, in order
    first = int(np.searchsorted(scored, width))
    run = scored[first:] == width + np.arange(len(scored) - first)  # the answer's tokens, unbroken
    sure = np.asarray(clear[first:], bool) & run
    count = len(sure) if sure.all() else int(np.argmin(sure))
    tokens = ids[width : width + count]
    ends = [j for j, t in enumerate(tokens.tolist()) if t in eos]
    return np.asarray(tokens[: ends[0] + 1] if ends else tokens, np.int32)
