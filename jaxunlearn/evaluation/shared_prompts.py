"""Scoring candidates that share a prompt: each distinct prompt runs through the model once
and its candidates continue from its KV cache.

TOFU scores every question's answer, paraphrase and perturbed answers after the same
prompt. Scoring rows whole computes that prompt once per candidate, the LM head at every
prompt position, and pads every row to a coarse bucket. Here, per chunk of prompts:
1. the prompts run in batches (left-padded, positions counted from each prompt's first
   token); their KV caches and last-position logits (which predict each continuation's
   first token) stay on the device;
2. the continuations, sorted by length across the whole chunk and padded to fine buckets,
   run in batches on their prompts' gathered caches (positions going on from their
   prompt's), with logits only where a token is predicted.
Rows that need the memorization and Min-K%++ statistics run in their own batches, so the
others pay only for a logsumexp and a gather. The log-probs are those of whole-row scoring
up to float rounding.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..data.batching import bucket_length
from ..data.tokenize import TokenizedRows
from ..models.cache import KVCache
from ..objectives.token_stats import IGNORE
from .kernels import RowScores, padded_batch, place_batch, round_up, token_statistics

# Prompt and continuation lengths, and chunk prompt counts, pad to these (few compiled shapes).
LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


@dataclasses.dataclass
class PromptGroups:
    """Rows split at their first supervised token into a shared prompt and a continuation."""

    prompts: list[np.ndarray]  # distinct prompts' ids
    group: np.ndarray  # [M] the prompt of each row
    continuations: list[np.ndarray]  # [M] each row's ids after its prompt
    supervised: list[np.ndarray]  # [M] bool per continuation token

    @classmethod
    def split(cls, rows: TokenizedRows) -> "PromptGroups":
        index: dict[bytes, int] = {}
        prompts, group, continuations, supervised = [], [], [], []
        for ids, labels in zip(rows.ids, rows.labels):
            sup = labels != IGNORE
            start = int(np.argmax(sup)) if sup.any() else len(ids)
            start = min(max(start, 1), len(ids))  # token 0 is never predicted: it is at least the prompt
            key = ids[:start].tobytes()  # equal token prefixes, not equal questions, share a prompt
            if key not in index:
                index[key] = len(prompts)
                prompts.append(ids[:start])
            group.append(index[key])
            continuations.append(ids[start:])
            supervised.append(sup[start:])
        return cls(prompts, np.asarray(group, np.int64), continuations, supervised)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _run_prompts(graphdef, params, ids, mask, positions):
    """The prompts' KV cache and the logits at their last position."""
    model = nnx.merge(graphdef, params)
    out = model.forward(ids, mask, positions=positions, cache=model.init_cache(*ids.shape), logits_to_keep=1)
    return out.cache, out.logits[:, 0]


@functools.partial(jax.jit, static_argnames=("graphdef", "full_stats"))
def _score_continuations(graphdef, params, prompts: KVCache, first_logits, b: dict, full_stats: bool):
    model = nnx.merge(graphdef, params)
    c = b["cont_ids"].shape[1]
    own = lambda x, axis=0: jnp.take(x, b["prompt"], axis=axis)  # noqa: E731  each row's prompt's

    def extend(x, axis):  # room for the continuation after the prompt's slots
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, c)
        return jnp.pad(x, pad)

    cache = KVCache(k=extend(own(prompts.k, 1), 4), v=extend(own(prompts.v, 1), 3),
                    valid=extend(own(prompts.valid), 1), positions=extend(own(prompts.positions), 1),
                    index=prompts.index)
    tail = model.forward(b["cont_ids"], b["cont_mask"], positions=b["cont_pos"], cache=cache).logits
    s0 = token_statistics(own(first_logits), b["first_target"], b["first_sup"], full_stats)
    s1 = token_statistics(tail, b["cont_targets"], b["cont_sup"], full_stats)
    return {k: jnp.concatenate([s0[k][:, None], s1[k]], axis=1) for k in s0}


def _prompt_arrays(prompts: list[np.ndarray], rows: int, width: int, pad_id: int) -> dict[str, np.ndarray]:
    """Left-padded prompts, positions 0.. from each prompt's first token."""
    ids, mask = np.full((rows, width), pad_id, np.int32), np.zeros((rows, width), np.int32)
    pos = np.zeros((rows, width), np.int32)
    for j, x in enumerate(prompts):
        ids[j, width - len(x):], mask[j, width - len(x):], pos[j, width - len(x):] = x, 1, np.arange(len(x))
    return {"ids": ids, "mask": mask, "positions": pos}


def _continuation_arrays(groups: PromptGroups, rows: list[int], slot: dict[int, int], size: int,
                         pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded continuations (inputs: all but the last token; targets: all but the
    first, which the prompt's last logits predict) and the chunk slot of each row's prompt."""
    width = bucket_length(max(1, max(len(groups.continuations[r]) - 1 for r in rows)), LENGTH_BUCKETS, None)
    a = {"cont_ids": np.full((size, width), pad_id, np.int32), "cont_mask": np.zeros((size, width), np.int32),
         "cont_pos": np.zeros((size, width), np.int32), "cont_targets": np.zeros((size, width), np.int32),
         "cont_sup": np.zeros((size, width), bool), "first_target": np.zeros((size,), np.int32),
         "first_sup": np.zeros((size,), bool), "prompt": np.zeros((size,), np.int32)}
    for j, r in enumerate(rows):
        cont, sup = groups.continuations[r], groups.supervised[r]
        a["prompt"][j] = slot[groups.group[r]]
        if len(cont):
            a["first_target"][j], a["first_sup"][j] = cont[0], sup[0]
        k = len(cont) - 1
        if k > 0:
            a["cont_ids"][j, :k], a["cont_mask"][j, :k] = cont[:-1], 1
            a["cont_pos"][j, :k] = len(groups.prompts[groups.group[r]]) + np.arange(k)
            a["cont_targets"][j, :k], a["cont_sup"][j, :k] = cont[1:], sup[1:]
    return a


def _batches(items: list[int], batch_size: int, multiple: int):
    """Consecutive batches with the padded size of each (the last, short one a power of two)."""
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        yield batch, padded_batch(len(batch), batch_size, multiple)


def _chunk_prompts(graphdef, params, groups, chunk: list[int], batch_size: int, pad_id: int, mesh, multiple):
    """Cache and last logits of the chunk's prompts, padded to a bucketed prompt count."""
    width = bucket_length(max(len(groups.prompts[i]) for i in chunk), LENGTH_BUCKETS, None)
    caches, logits = [], []
    for batch, size in _batches(chunk, batch_size, multiple):
        a = _prompt_arrays([groups.prompts[i] for i in batch], size, width, pad_id)
        cache, last = _run_prompts(graphdef, params, *(place_batch(a[k], mesh) for k in ("ids", "mask", "positions")))
        n = len(batch)
        caches.append((cache.k[:, :n], cache.v[:, :n], cache.valid[:n], cache.positions[:n]))
        logits.append(last[:n])
    count = round_up(bucket_length(len(chunk), LENGTH_BUCKETS, None), multiple)

    def join(parts, axis):  # the batches' prompts side by side, then empty slots up to `count`
        x = jnp.concatenate(parts, axis=axis)
        return jnp.pad(x, [(0, count - len(chunk)) if i == axis else (0, 0) for i in range(x.ndim)])

    k, v, valid, positions = zip(*caches)
    cache = KVCache(k=join(k, 1), v=join(v, 1), valid=join(valid, 0), positions=join(positions, 0),
                    index=jnp.int32(width))
    return cache, join(logits, 0)


def score_shared_prompts(model, rows: TokenizedRows, pad_id: int, full: np.ndarray, batch_size: int = 16,
                         mesh=None, progress=None, chunk_prompts: int | None = None) -> RowScores:
    """Every row's supervised-token log-probs, computing each distinct prompt once; the
    rows where `full` is set also get the memorization and Min-K%++ statistics (the others
    come back with zeros there), as `score_rows` gives them. Prompts go in chunks of
    `chunk_prompts` (default 16 batches) whose caches are held at once."""
    full = np.asarray(full, bool)
    groups = PromptGroups.split(rows)
    multiple = 1 if mesh is None else mesh.shape["data"]
    chunk_prompts = chunk_prompts or 16 * batch_size
    graphdef, params = nnx.split(model)
    out = {k: [None] * len(rows) for k in ("token_logp", "correct", "mu", "sigma")}
    by_length = sorted(range(len(groups.prompts)), key=lambda i: -len(groups.prompts[i]))
    for start in range(0, len(by_length), chunk_prompts):
        chunk = by_length[start:start + chunk_prompts]
        prompts, first_logits = _chunk_prompts(graphdef, params, groups, chunk, batch_size, pad_id, mesh, multiple)
        slot = {p: j for j, p in enumerate(chunk)}
        members = np.flatnonzero(np.isin(groups.group, chunk))
        for full_stats in (True, False):
            part = sorted((r for r in members if full[r] == full_stats), key=lambda r: -len(groups.continuations[r]))
            for batch, size in _batches(part, batch_size, multiple):
                a = _continuation_arrays(groups, batch, slot, size, pad_id)
                res = jax.device_get(_score_continuations(graphdef, params, prompts, first_logits,
                                                          {k: place_batch(v, mesh) for k, v in a.items()},
                                                          full_stats=full_stats))
                for j, r in enumerate(batch):
                    m = res["mask"][j]
                    out["token_logp"][r] = res["token_logp"][j][m].astype(np.float64)
                    out["correct"][r] = res["correct"][j][m]
                    out["mu"][r] = res["mu"][j][m].astype(np.float64)
                    out["sigma"][r] = res["sigma"][j][m].astype(np.float64)
                if progress is not None:
                    progress.update(len(batch))
    return RowScores(**out)
