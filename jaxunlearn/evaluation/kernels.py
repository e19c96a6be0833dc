"""Jitted scoring of many (prompt, candidate) rows, and batched generation, per bucket shape.

`score_rows` returns, per row, the supervised tokens' log-probs, whether the argmax equals
the token (exact memorization, extraction strength; `clear`: by a margin that rounding
cannot overturn, so greedy decoding is known to produce it) and the mean/std of the log-prob
under the model's own next-token distribution (Min-K%++). Rows are grouped by length
into fixed-size batches padded to bucket lengths, so each shape compiles once; the batch
axis is split over the mesh's data axis when a mesh is given.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..data.batching import bucket_length, pad_rows
from ..data.eval_sets import left_pad
from ..data.tokenize import TokenizedRows
from ..parallel import batch_ways, host_get, params_mesh, place_rows
from .budgets import generation_budgets
from .generation import compile_decoding, decoding_call, decoding_layers, run_decoding, strip_after_eos
from ..models.layers import row_sum
from ..objectives.token_stats import IGNORE, shifted


# The argmax is `clear` when it leads the runner-up by CLEAR_ULPS units of the logits'
# precision times the leading logit's size: far more than a differently ordered forward
# pass (decoding's, a prefix tree's) moves an fp32 logit, so greedy decoding picks the
# same token. In bf16 that margin is about 8 x the logit, i.e. never: there the two
# passes' rounding differs too much to say.
CLEAR_ULPS = 1024


def token_statistics(lg, targets, sup, full_stats: bool, log_partition=None) -> dict:
    """Per position of logits lg [..., V] predicting targets [...] (supervised where sup):
    the target's log-prob, and with full_stats the mean/std of the log-prob under the
    model's own distribution (Min-K%++), whether the argmax is the target (`correct`) and
    whether it is so by a margin rounding cannot overturn (`clear`, see CLEAR_ULPS).
    `log_partition`: already computed for these positions (prefix trees: by the blockwise
    head at every scored slot), so not again."""
    eps = jnp.finfo(lg.dtype).eps
    lg = lg.astype(jnp.float32)
    if log_partition is None:
        top = jnp.max(lg, axis=-1)
        log_partition = top + jnp.log(row_sum(jnp.exp(lg - top[..., None])))
    if not full_stats:  # log p(target) only: a log-partition and a gather, no [..., V] temporaries
        tok = jnp.take_along_axis(lg, targets[..., None], axis=-1)[..., 0] - log_partition
        zeros = jnp.zeros_like(tok)
        return {
            "token_logp": jnp.where(sup, tok, 0.0),
            "mask": sup,
            "mu": zeros,
            "sigma": zeros,
            "correct": jnp.zeros_like(sup),
            "clear": jnp.zeros_like(sup),
        }
    logp = lg - log_partition[..., None]
    tok = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    p = jnp.exp(logp)
    mu = row_sum(p * logp)
    # centred, not E[logp^2] - mu^2: in fp32 that difference of two ~17s lost 3 digits of a 0.1
    sigma = jnp.sqrt(row_sum(p * jnp.square(logp - mu[..., None])))
    best = jnp.argmax(lg, axis=-1)
    top = jnp.take_along_axis(lg, best[..., None], axis=-1)[..., 0]
    correct = (best == targets) & sup
    runner_up = jnp.max(jnp.where(jnp.arange(lg.shape[-1]) == best[..., None], -jnp.inf, lg), axis=-1)
    clear = correct & (top - runner_up > CLEAR_ULPS * eps * jnp.maximum(jnp.abs(top), 1.0))
    return {
        "token_logp": jnp.where(sup, tok, 0.0),
        "mask": sup,
        "mu": mu,
        "sigma": sigma,
        "correct": correct,
        "clear": clear,
    }


@functools.partial(jax.jit, static_argnames=("graphdef", "full_stats"))
def _score(graphdef, params, ids, mask, labels, full_stats: bool):
    logits = nnx.merge(graphdef, params).forward(ids, mask).logits
    return token_statistics(*shifted(logits, labels), full_stats)


@dataclasses.dataclass
class RowScores:
    """Per row: supervised token log-probs and statistics (1-D arrays of that row's tokens)."""

    token_logp: list[np.ndarray]
    correct: list[np.ndarray]
    mu: list[np.ndarray]
    sigma: list[np.ndarray]
    clear: list[np.ndarray]  # correct by a margin greedy decoding cannot overturn (CLEAR_ULPS)

    @property
    def sum_logp(self) -> np.ndarray:
        return np.array([x.sum() for x in self.token_logp], np.float64)

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(x) for x in self.token_logp], np.int64)

    @property
    def avg_nll(self) -> np.ndarray:
        return -self.sum_logp / np.maximum(self.counts, 1)

    def take(self, index) -> "RowScores":
        return RowScores(*([getattr(self, f.name)[i] for i in index] for f in dataclasses.fields(self)))


def supervised_tokens(rows: TokenizedRows, r: int) -> np.ndarray:
    """Token indices of row r that are scored, in the order its statistics come back
    (token 0 is never predicted)."""
    sup = np.flatnonzero(rows.labels[r] != IGNORE)
    return sup[sup > 0]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_batch(real: int, batch_size: int, multiple: int = 1) -> int:
    """Rows a batch of `real` rows is padded to: the full batch size, or for the last, short
    batch the next power of two, so it neither compiles a shape per size nor decodes a
    whole batch of copies (20 rows in batches of 16: 16 + 4, not 16 + 16); rounded up to a
    multiple of the devices it is split over."""
    return round_up(min(batch_size, 1 << max(real - 1, 0).bit_length()), multiple)


# Rows per device in one decoding batch when the caller leaves the batching to
# `decoding_batch_size`: a decoding step reads every weight once whatever its rows, so on
# CPU SmolLM2's step costs about 27 ms + 2.8 ms a row (4 rows 40 ms, 16 rows 73, 20 rows
# 87, 64 rows 180) and one batch of 20 rows decodes 23% faster than 16 + 4. DECODE_TOKENS
# bounds the KV cache a device holds (rows x (prompt width + new tokens)): long prompts
# get fewer rows, about what batches of 16 held before.
DECODE_ROWS = 64
DECODE_TOKENS = 64 * 512


def decoding_batch_size(rows: int, batch_size: int | None, multiple: int = 1, row_tokens: int = 1) -> int:
    """Rows in each decoding batch of `rows` prompts: `batch_size` when given, else the
    fewest batches of at most DECODE_ROWS rows (and DECODE_TOKENS cache slots of
    `row_tokens` each) per device, over `multiple` devices, made even (20 rows: one batch of
    20; 300 rows: five of 60), so every batch has the same shape and no batch is a short
    remainder that pays a whole step's weight reads for a few rows."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: a decoding batch needs at least 1 row (None: even batches)")
        return batch_size
    cap = max(1, min(DECODE_ROWS, DECODE_TOKENS // max(row_tokens, 1))) * multiple
    batches = max(1, -(-rows // cap))
    return round_up(-(-max(rows, 1) // batches), multiple)


def batch_mesh(model, mesh=None):
    """The mesh batches go on: `mesh`, else the one the model's parameters span (a model
    loaded onto a mesh, e.g. across processes), else None (the default device)."""
    return mesh if mesh is not None else params_mesh(nnx.state(model))


def score_rows(
    model,
    rows: TokenizedRows,
    pad_id: int,
    batch_size: int = 16,
    buckets: tuple[int, ...] = (64, 128, 256, 512),
    mesh=None,
    progress=None,
    full_stats: bool = True,
) -> RowScores:
    """Score every row; rows are processed longest-first in fixed-size batches.

    full_stats=False computes only the token log-probs (mu, sigma, correct, clear come back 0)."""
    graphdef, params = nnx.split(model)
    mesh = batch_mesh(model, mesh)
    n = len(rows)
    order = np.argsort(-rows.lengths(), kind="stable")
    out = {k: [None] * n for k in ("token_logp", "correct", "mu", "sigma", "clear")}
    for start in range(0, n, batch_size):
        index = list(order[start : start + batch_size])
        real = len(index)
        index += [index[-1]] * (batch_size - real)  # a full batch keeps one compiled shape
        length = bucket_length(int(rows.lengths()[index].max()), buckets, None)
        b = pad_rows(rows, index, length, pad_id)
        arrays = (place_rows(b[k], mesh) for k in ("input_ids", "attention_mask", "labels"))
        res = host_get(_score(graphdef, params, *arrays, full_stats=full_stats))
        for j in range(real):
            m = res["mask"][j]
            i = index[j]
            out["token_logp"][i] = res["token_logp"][j][m].astype(np.float64)
            out["correct"][i] = res["correct"][j][m]
            out["clear"][i] = res["clear"][j][m]
            out["mu"][i] = res["mu"][j][m].astype(np.float64)
            out["sigma"][i] = res["sigma"][j][m].astype(np.float64)
        if progress is not None:
            progress.update(real)
    return RowScores(**out)


def prompt_width(longest: int, buckets: tuple[int, ...]) -> int:
    """The width prompts up to `longest` tokens are left-padded to: its bucket, or itself
    beyond the largest bucket."""
    return longest if longest > max(buckets) else bucket_length(longest, buckets, None)


def generate_texts(
    model,
    tokenizer,
    prompts: list[np.ndarray],
    pad_id: int,
    eos_ids,
    batch_size: int | None = None,
    budgets=None,
    buckets: tuple[int, ...] = (64, 128, 256),
    progress=None,
    temperature: float = 0.0,
    seed: int = 0,
    stop_strings: tuple[str, ...] = (),
    strip: bool = True,
    mesh=None,
    projections: str = "auto",
    known=None,
) -> list[str]:
    """Greedy answers from left-padded prompts, each at most its budget of new tokens
    (`evaluation.budgets`; default: 200 - its own prompt). Prompt padding never counts
    against a budget: the buffer is sized by the batch's largest budget, rounded up to a
    multiple of 32 (few compiles), and every row stops at its own. `temperature` > 0
    samples instead (each batch its own PRNG stream from `seed`). Each text is cut at the
    first of `stop_strings` found in it (open-unlearning's stopwords), then stripped (unless
    `strip` is False: lm-eval keeps the spaces). `projections`: how decoding multiplies its
    projections (`generation.decoding_layers`). Batches go on `mesh`, by default the mesh
    the parameters span (none: the default device). `batch_size`: rows per decoding batch
    (a short last batch pads to the next power of two); None: `decoding_batch_size`'s even
    batches of up to DECODE_ROWS rows per device. Greedy answers do not depend on the
    batching; sampled ones do (each batch draws from its own stream). `known`: per row, the
    tokens its greedy answer is known to start with (`known_answers.known_prefixes`); its
    decoding resumes after them, and a row known to its EOS or its budget is not decoded."""
    mesh = batch_mesh(model, mesh)
    n = len(prompts)
    if budgets is None:
        budgets = generation_budgets([len(p) for p in prompts], "per_row", 200)
    budgets = np.asarray(budgets, np.int64)
    eos = sorted(set(np.atleast_1d(eos_ids).tolist()))
    texts: list[str | None] = [None] * n

    def finish(i: int, tokens: list[int]) -> None:
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in stop_strings:
            text = text.split(stop)[0] if stop else text
        texts[i] = text.strip() if strip else text

    starts, ended = [np.zeros(0, np.int32)] * n, [False] * n
    if known is not None:  # decode the rest of each answer after what is known of it
        if temperature > 0:
            raise ValueError("known answer starts are greedy decoding's; sampling (temperature > 0) has none")
        starts = [np.asarray(k[: budgets[i]], np.int32) for i, k in enumerate(known)]
        ended = [len(k) == budgets[i] or (len(k) > 0 and int(k[-1]) in eos) for i, k in enumerate(starts)]
        for i in np.flatnonzero(ended):
            finish(int(i), strip_after_eos(starts[i][None], eos)[0])
        if progress is not None and any(ended):
            progress.update(int(sum(ended)))
        prompts = [np.concatenate([p, k]) for p, k in zip(prompts, starts)]
        budgets = budgets - np.asarray([len(k) for k in starts], np.int64)
    order = [i for i in np.argsort([-len(p) for p in prompts], kind="stable") if not ended[i]]
    if not order:
        return texts
    n = len(order)
    layer_params = decoding_layers(model, projections=projections)
    ways = batch_ways(mesh)
    longest = max([1, *(len(prompts[i]) for i in order)])
    cache = prompt_width(longest, buckets) + round_up(max(1, int(budgets[order].max(initial=1))), 32)
    size = decoding_batch_size(n, batch_size, ways, cache)
    batches = []  # (rows, real rows, the decoding call)
    for start in range(0, n, size):
        index = list(order[start : start + size])
        real = len(index)
        padded = padded_batch(real, size, ways) if batch_size is not None else size
        index += [index[-1]] * (padded - real)
        width = prompt_width(max(len(prompts[i]) for i in index), buckets)
        ids, mask = left_pad([prompts[i] for i in index], pad_id, width)
        new = round_up(max(1, int(budgets[index].max())), 32)
        call = decoding_call(
            model, ids, mask, new, eos, pad_id, layer_params, budgets[index], temperature, seed + start, mesh
        )
        batches.append((index, real, call))
    compile_decoding([call for _, _, call in batches])
    for index, real, call in batches:
        for j, row in enumerate(strip_after_eos(run_decoding(call)[:real], eos)):
            finish(index[j], starts[index[j]].tolist() + row)
        if progress is not None:
            progress.update(real)
    return texts
