"""Evaluate one model on the configured sets: per-example records and TOFU / Closer Look /
MIA summaries. Pure computation; `report.py` writes the files."""

from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np
from tqdm.auto import tqdm

from ..data.batching import DEFAULT_BUCKETS
from ..data.eval_sets import GT, PARA, PERTURBED, build_eval_set
from ..data.tokenize import pad_token_id
from ..errors import DataError
from ..models.config import to_dtype
from ..precision import matmul_precision as precision_context
from . import metrics as M
from .aggregate import aggregate, set_stats
from .registry import EXAMPLE_METRICS, SetPass
from .budgets import generation_budgets, warn_unread_budget_settings
from .kernels import generate_texts, score_rows
from .known_answers import answer_order, known_prefixes
from .overlap import StopBetweenBatches, generation_beside
from .prefix_trees import score_prefix_trees
from .config import EvalSection
from .sets import SetSpec

log = logging.getLogger(__name__)


def check_vocab(model, tokenizer) -> None:
    if len(tokenizer) > model.config.vocab_size:
        raise DataError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {model.config.vocab_size}: "
            "they do not belong together; load the tokenizer of this checkpoint"
        )


def place_for_evaluation(model, batch_size: int):
    """(model, mesh): where scoring and decoding run. A model loaded onto a mesh (several
    devices, or a multi-host launch where every process runs the same evaluation) stays
    there. A model on one device, with several local devices that split batch_size, gets
    its parameters replicated over a data axis once, here, rather than copied at every
    batch; the caller's model is left as it is. Else (model, None)."""
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from ..parallel import make_mesh
    from .kernels import batch_mesh

    if (mesh := batch_mesh(model)) is not None:
        return model, mesh
    n = jax.local_device_count()
    if n == 1 or batch_size % n:
        return model, None
    mesh = make_mesh(data=n, devices=jax.local_devices())
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.device_put(state, NamedSharding(mesh, PartitionSpec()))), mesh


def _per_candidate(evalset, avg_nll):
    n = len(evalset)
    gt, para = np.zeros(n), np.zeros(n)
    pert = np.zeros((n, max(evalset.num_perturbed, 1)))
    for i, (ex, kind, slot) in enumerate(zip(evalset.example, evalset.kind, evalset.slot)):
        if kind == GT:
            gt[ex] = avg_nll[i]
        elif kind == PARA:
            para[ex] = avg_nll[i]
        elif kind == PERTURBED:
            pert[ex, slot] = avg_nll[i]
    return gt, para, pert[:, : evalset.num_perturbed]


class _QuestionCounter:
    """Scoring runs over candidate answers (a question has its answer, paraphrase and
    perturbations); the bar counts questions, so candidates advance it by their share."""

    def __init__(self, bar, candidates_per_question: float):
        self.bar, self.per, self.done = bar, candidates_per_question, 0.0

    def update(self, candidates: int) -> None:
        before = int(self.done)
        self.done += candidates / self.per
        self.bar.update(min(int(self.done), self.bar.total) - before)


def score_candidates(model, evalset, pad: int, batch_size: int, mesh=None, bar=None):
    """(full statistics of the answer rows, avg NLL of every candidate row). Candidates
    sharing prefixes (a question's prompt, the start of its answers) compute them once
    (`prefix_trees`); only the answer rows get the memorization and Min-K%++ statistics,
    the others log-probs only."""
    gt_rows = np.flatnonzero(evalset.kind == GT)
    scores = score_prefix_trees(model, evalset.candidates, pad, evalset.kind == GT, batch_size, mesh, bar)
    return scores.take(gt_rows), scores.avg_nll


def evaluate_model(
    model,
    tokenizer,
    template,
    sets: list[SetSpec],
    options: EvalSection,
    max_length: int = 500,
    buckets: tuple[int, ...] = DEFAULT_BUCKETS,
    matmul_precision: str = "auto",
    embedder=None,
    judge=None,
    reference=None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """(per-example records, summary) over `sets` (sets.load_sets), evaluated as `options`
    (the eval section) says; rows are cut at options.score_max_length or `max_length`;
    `buckets` pad the reference model's rows (MIA); matmuls at `matmul_precision`."""
    with precision_context(matmul_precision, to_dtype(model.config.compute_dtype)):
        return _evaluate_model(
            model, tokenizer, template, sets, options, max_length, buckets, embedder, judge, reference, progress
        )


def _evaluate_model(model, tokenizer, template, sets, e, max_length, buckets, embedder, judge, reference, progress):
    check_vocab(model, tokenizer)
    warn_unread_budget_settings(e)
    pad = pad_token_id(tokenizer)
    model, mesh = place_for_evaluation(model, e.batch_size)
    overlap, from_scoring = answer_order(e.answers_from_scoring, e.overlap_generation, mesh, model.config.compute_dtype)
    records, summary = [], {"sets": {}}
    for spec in sets:
        evalset = build_eval_set(
            tokenizer,
            template,
            spec.rows,
            spec.name,
            e.score_max_length or max_length,
            e.num_rows,
            base_key=spec.base_key,
        )
        with _set_answers(model, tokenizer, evalset, spec, e, pad, overlap, from_scoring, progress) as answers:
            rec = _evaluate_set(model, tokenizer, evalset, spec, e, pad, mesh, progress, answers, embedder, judge)
        records += rec
        summary["sets"][spec.name] = set_stats(spec.name, rec)
    if reference is not None:
        _reference_mia(records, reference, tokenizer, template, e.batch_size, max_length, buckets, pad)
    summary.update(aggregate(summary["sets"], records))
    summary["conventions"] = {
        "generation_budget": e.generation_budget,
        "memorization": e.memorization,
        "score_max_length": e.score_max_length or max_length,
    }
    if embedder is not None:
        summary["embedding_model"] = embedder.name
    if judge is not None:
        summary["nli_judge"] = judge.name
    return records, summary


def _evaluate_set(model, tokenizer, evalset, spec, e, pad, mesh, progress, answers, embedder, judge):
    """One set's records: its candidates scored, its answers from `answers` (a function of
    the reference answers' scores that waits for them; None: the set has none), then the
    registry's per-example metrics."""
    n = len(evalset)
    bar = tqdm(total=n, desc=f"eval {spec.name}: scoring", unit="question", disable=not progress, dynamic_ncols=True)
    counter = _QuestionCounter(bar, len(evalset.candidates) / max(n, 1))
    scores, avg_nll = score_candidates(model, evalset, pad, e.batch_size, mesh, counter)
    bar.update(n - bar.n)  # the shares round
    bar.close()
    gt, para, pert = _per_candidate(evalset, avg_nll)
    rec = [
        {
            "set": spec.name,
            "index": i,
            "question": r["question"],
            "answer": evalset.references[i],
            "avg_nll": float(gt[i]),
            "probability": float(np.exp(-gt[i])),
        }
        for i, r in enumerate(evalset.rows)
    ]
    if evalset.num_perturbed:
        r = M.truth_ratios(para, pert)
        for i in range(n):
            rec[i]["truth_ratio"] = float(r[i])
            rec[i]["avg_nll_base"] = float(para[i])
            rec[i]["avg_nll_perturbed"] = pert[i].tolist()
    elif spec.name != "holdout":
        log.warning("set %s has no perturbed answers: truth ratio skipped", spec.name)
    # the registry's per-example metrics, from what this set's single pass produced
    done = SetPass(spec.name, spec.kind, evalset, scores, tokenizer, e)
    available = {"scores"}
    if answers is not None:
        done.generations = answers(scores)
        done.references = [row.get(spec.reference_key, row["answer"]) for row in evalset.rows]
        for i in range(n):
            rec[i]["generation"] = done.generations[i]
        available.add("generations")
        done.embedder, done.judge = embedder, judge
        available |= {"embeddings"} if embedder is not None else set()
        available |= {"judge"} if judge is not None else set()
    for metric in EXAMPLE_METRICS.values():
        if metric.needs in available:
            values = metric.compute(done)
            for field, column in values.items() if isinstance(values, dict) else [(metric.name, values)]:
                for i in range(n):
                    rec[i][field] = column[i]
    return rec


@contextlib.contextmanager
def _set_answers(model, tokenizer, evalset, spec, e, pad, overlap: bool, from_scoring: bool, progress: bool):
    """A context that yields a function of the reference answers' scores that waits for the
    set's greedy answers, or None when the set has none. With `overlap` they are already
    decoding beside scoring (`overlap.generation_beside`); else they are decoded when asked,
    after what scoring showed of them (`known_answers`) when `from_scoring`."""
    if not e.generate or spec.name == "holdout":
        yield None
        return
    budgets = generation_budgets(
        [len(p) for p in evalset.prompts], e.generation_budget, e.max_length, e.max_new_tokens, e.tofu_batch_size
    )

    def generate(stop, known=None):
        bar = tqdm(
            total=len(evalset),
            desc=f"eval {spec.name}: generating",
            unit="question",
            disable=not progress,
            dynamic_ncols=True,
        )
        with bar:
            eos, prompts, rows = tokenizer.eos_token_id, evalset.prompts, e.generation_batch_size
            counter = StopBetweenBatches(bar, stop)
            return generate_texts(model, tokenizer, prompts, pad, eos, rows, budgets, progress=counter, known=known)

    if from_scoring:

        def known_then_rest(scores):
            known = known_prefixes(evalset, scores, tokenizer.eos_token_id)
            whole = sum(len(k) > 0 and k[-1] == tokenizer.eos_token_id for k in known)
            tokens = sum(len(k) for k in known)
            log.info("eval %s: %d tokens of the answers known from scoring, %d answers whole", spec.name, tokens, whole)
            return generate(threading.Event(), known)

        yield known_then_rest
        return
    with generation_beside(overlap, generate) as result:
        yield lambda scores: result()


def _reference_mia(records, reference, tokenizer, template, batch_size, max_length, buckets, pad):
    """Reference-difference attack: LOSS under the model minus LOSS under a reference."""
    from ..data.tokenize import encode_qa

    rows = [r for r in records if r["set"] in ("forget", "holdout")]
    enc = encode_qa(
        tokenizer,
        template,
        [r["question"] for r in rows],
        [r["answer"] for r in rows],
        max_length,
        what="mia reference",
    )
    ref_loss = score_rows(reference, enc, pad, batch_size, tuple(buckets)).avg_nll
    for r, loss in zip(rows, ref_loss):
        r["mia"]["reference_difference"] = r["mia"]["loss"] - float(loss)
