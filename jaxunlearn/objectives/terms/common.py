"""Helpers the term files share: per-row denominators and reference / hidden-state reads."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..base import StepBatch, option
from ..token_stats import num_supervised, seq_nll, token_logp


@dataclasses.dataclass(frozen=True)
class PreferenceOptions:
    beta: float = option(0.1, "NPO / DPO / AP inverse temperature (loss scale 2/beta, AP 1/beta)")


def rows(stream: str):
    """Denominator: one per row (sequence-level terms)."""
    return lambda batch, options: jnp.ones(batch.streams[stream].input_ids.shape[0], jnp.float32)


def tokens(stream: str):
    """Denominator: the row's supervised tokens (token-mean terms)."""
    return lambda batch, options: num_supervised(batch.streams[stream].labels).astype(jnp.float32)


def sum_logp(out, stream_batch) -> jax.Array:
    """Per row, the sum of log p(supervised token)."""
    return token_logp(out.logits, stream_batch.labels)[0].sum(-1)


def reference_seq_nll(ref, batch: StepBatch, stream: str) -> jax.Array:
    """The reference's seqNLL: precomputed once per example when the loop provides it."""
    if stream in batch.reference_nll:
        return batch.reference_nll[stream]
    return seq_nll(ref[stream].logits, batch.streams[stream].labels)


def layer_output(out, layer: int) -> jax.Array:
    return out.hidden_states[layer + 1].astype(jnp.float32)  # index 0 holds the embeddings


def per_sequence_mse(hidden, target, labels) -> jax.Array:
    """Per row b: [sum_t mean_d (hidden - target)^2 over supervised t] / n_b (open-unlearning)."""
    mask = (labels != -100).astype(jnp.float32)
    per_tok = ((hidden - target) ** 2).mean(-1)
    return (per_tok * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
