"""Per-token and per-sequence statistics shared by every objective (SPEC section 1).

Logits at position t predict token t+1, so everything works on the shifted pair
(logits[:, :-1], labels[:, 1:]); log-softmax is always fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IGNORE = -100


def shifted(logits: jax.Array, labels: jax.Array):
    """(logits predicting t+1 [B, T-1, V], their targets [B, T-1], supervised mask [B, T-1])."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    return logits[:, :-1], jnp.where(mask, targets, 0), mask


def log_probs(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def token_logp(logits: jax.Array, labels: jax.Array):
    """(log p(target) [B, T-1] zeroed where ignored, mask [B, T-1])."""
    lg, targets, mask = shifted(logits, labels)
    logp = jnp.take_along_axis(log_probs(lg), targets[..., None], axis=-1)[..., 0]
    return jnp.where(mask, logp, 0.0), mask


def seq_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """seqNLL: summed cross-entropy of each sequence's supervised tokens, [B]."""
    logp, _ = token_logp(logits, labels)
    return -logp.sum(-1)


def avg_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """avgNLL: seqNLL / number of supervised tokens, [B] (0 for a row without any)."""
    logp, mask = token_logp(logits, labels)
    return -logp.sum(-1) / jnp.maximum(mask.sum(-1), 1)


def num_supervised(labels: jax.Array) -> jax.Array:
    return (labels[:, 1:] != IGNORE).sum()
