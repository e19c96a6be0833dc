"""Per-token and per-sequence statistics shared by every objective (SPEC section 1).

Logits at position t predict token t+1, so everything works on the shifted pair
(logits[:, :-1], labels[:, 1:]); log-softmax is always fp32.

The hot path, log p(target), never materializes a [B, T, V] log-softmax: the forward is a
logsumexp and a gather, and a custom VJP writes the gradient softmax - onehot in one fused
pass (autodiff of take_along_axis would build a scatter). It also works on the unshifted
logits with left-shifted targets, so no sliced copy of the logits is made.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..models.vocab_head import VocabHead, log_partition, softmax_stats, teacher_expectation

IGNORE = -100


def shifted(logits: jax.Array, labels: jax.Array):
    """(logits predicting t+1 [B, T-1, V], their targets [B, T-1], supervised mask [B, T-1])."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    return logits[:, :-1], jnp.where(mask, targets, 0), mask


def log_probs(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def vocab_size(logits: jax.Array | VocabHead) -> int:
    return logits.vocab_size if isinstance(logits, VocabHead) else logits.shape[-1]


def full_logits(logits: jax.Array | VocabHead) -> jax.Array:
    """fp32 [B, T, V] logits, materialized from a head when need be (the few statistics
    that need the whole distribution, e.g. ME's epsilon form)."""
    return logits.logits() if isinstance(logits, VocabHead) else logits.astype(jnp.float32)


def target_logp(logits: jax.Array | VocabHead, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """log softmax(logits)[target], fp32 [B, T], for valid integer targets [B, T]. mask
    [B, T]: only those positions are needed (a head then computes no others; 0 there)."""
    if isinstance(logits, VocabHead):
        return logits.target_logits(targets) - log_partition(logits, where=mask)
    return _target_logp(logits, targets)


def uniform_cross_entropy(logits: jax.Array | VocabHead) -> jax.Array:
    """KL(U || p) = lse - mean_v z_v - log V per position, [B, T]."""
    if isinstance(logits, VocabHead):
        lse, mean, _ = softmax_stats(logits)
        return lse - mean - math.log(logits.vocab_size)
    x = logits.astype(jnp.float32)
    return jax.nn.logsumexp(x, axis=-1) - x.mean(-1) - math.log(x.shape[-1])


def negative_entropy(logits: jax.Array | VocabHead) -> jax.Array:
    """sum_v p_v log p_v = E_p[z] - lse per position, [B, T]."""
    if isinstance(logits, VocabHead):
        lse, _, expected = softmax_stats(logits)
        return expected - lse
    logp = log_probs(logits)
    return (jnp.exp(logp) * logp).sum(-1)


def distillation_cross_entropy(teacher, student, targets=None, beta: float = 0.0) -> jax.Array:
    """-sum_v q_v log p_v per position, [B, T], with p the student's softmax and
    q = softmax(teacher - beta onehot(target)) (beta 0: the teacher's own distribution).
    The teacher is the frozen reference (no gradient reaches it)."""
    if isinstance(student, VocabHead):
        expected, lse, _ = teacher_expectation(teacher, student, targets, beta)
        return lse - expected
    z_t = teacher.astype(jnp.float32)
    if beta:
        z_t = z_t - beta * jax.nn.one_hot(targets, z_t.shape[-1], dtype=z_t.dtype)
    return -(jax.nn.softmax(z_t, axis=-1) * log_probs(student)).sum(-1)


def kl_divergence(teacher, student) -> jax.Array:
    """KL(teacher || student) per position, [B, T] (teacher: the frozen reference)."""
    if isinstance(student, VocabHead):
        expected, lse, teacher_negative_entropy = teacher_expectation(jax.lax.stop_gradient(teacher), student)
        return teacher_negative_entropy - expected + lse
    t_log, s_log = log_probs(teacher), log_probs(student)
    return (jnp.exp(t_log) * (t_log - s_log)).sum(-1)


@jax.custom_vjp
def _target_logp(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return _target_logp_fwd(logits, targets)[0]


def _target_logp_fwd(logits, targets):
    x = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(x, axis=-1)
    tok = jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
    return tok - lse, (logits, targets, lse)


def _target_logp_bwd(res, g):
    logits, targets, lse = res
    x = logits.astype(jnp.float32)
    onehot = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1) == targets[..., None]
    grad = g[..., None] * (onehot.astype(jnp.float32) - jnp.exp(x - lse[..., None]))
    return grad.astype(logits.dtype), None


_target_logp.defvjp(_target_logp_fwd, _target_logp_bwd)


def next_token_targets(labels: jax.Array):
    """(targets [B, T] = labels shifted left with 0 where ignored, supervised mask [B, T]);
    the last position never has a target."""
    nxt = jnp.concatenate([labels[:, 1:], jnp.full_like(labels[:, :1], IGNORE)], axis=1)
    mask = nxt != IGNORE
    return jnp.where(mask, nxt, 0), mask


def token_logp(logits: jax.Array, labels: jax.Array):
    """(log p(target) [B, T-1] zeroed where ignored, mask [B, T-1])."""
    targets, mask = next_token_targets(labels)
    logp = jnp.where(mask, target_logp(logits, targets, mask), 0.0)
    return logp[:, :-1], mask[:, :-1]


def seq_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """seqNLL: summed cross-entropy of each sequence's supervised tokens, [B]."""
    logp, _ = token_logp(logits, labels)
    return -logp.sum(-1)


def avg_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """avgNLL: seqNLL / number of supervised tokens, [B] (0 for a row without any)."""
    logp, mask = token_logp(logits, labels)
    return -logp.sum(-1) / jnp.maximum(mask.sum(-1), 1)


def num_supervised(labels: jax.Array) -> jax.Array:
    """Supervised tokens per row, [B]."""
    return (labels[:, 1:] != IGNORE).sum(-1)
