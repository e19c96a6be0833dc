"""ME (Yuan et al. 2025): maximize the entropy of the forget positions' next-token distribution."""

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import full_logits, log_probs, negative_entropy, uniform_cross_entropy, vocab_size


@dataclasses.dataclass(frozen=True)
class MEOptions:
    me_direction: Literal["uniform_ce", "kl_to_uniform"] = option(
        "uniform_ce", "uniform_ce: KL(U||P_t) (the paper's code); kl_to_uniform: KL(P_t||U) (the paper's text)"
    )
    me_positions: Literal["all_padded", "prompt_and_answer", "answer"] = option(
        "prompt_and_answer",
        "positions averaged over: all_padded (the paper's scripts, mask=false), "
        "prompt_and_answer (attended), answer (supervised)",
    )
    me_epsilon: float = option(0.0, "0: exact log_softmax; 1e-12: the paper code's log(softmax(z) + 1e-12)")


def _positions(b, options) -> jax.Array:
    """Mask [B, T-1] of the positions ME averages over (logit t predicts token t+1)."""
    if options.me_positions == "all_padded":
        return jnp.ones_like(b.labels[:, 1:], dtype=bool)
    if options.me_positions == "prompt_and_answer":
        return b.attention_mask[:, 1:].astype(bool)
    return b.labels[:, 1:] != -100


def _count(batch, options):
    return _positions(batch.streams["forget"], options).sum(-1).astype(jnp.float32)


@register_term(
    "ME", "forget", "mean over positions of KL(U||P_t) (or KL(P_t||U))", ("forget",), _count, options=MEOptions
)
def me(pol, ref, batch, options):
    logits, eps = pol["forget"].logits, options.me_epsilon
    if not eps:  # per-token statistics only: blockwise when the forward gave a head
        if options.me_direction == "uniform_ce":  # KL(U || P) = -log V - mean_v log P_v = lse - mean_v z_v - log V
            per_pos = uniform_cross_entropy(logits)[:, :-1]
        else:  # KL(P || U) = log V - H(P)
            per_pos = math.log(vocab_size(logits)) + negative_entropy(logits)[:, :-1]
    else:  # the paper's code: log(softmax(z) + eps), which caps the terms of tiny P_v
        z = full_logits(logits)[:, :-1]
        vocab = z.shape[-1]
        if options.me_direction == "uniform_ce":
            per_pos = -jnp.log(jax.nn.softmax(z, axis=-1) + eps).mean(-1) - math.log(vocab)
        else:
            p = jnp.exp(log_probs(z))
            per_pos = math.log(vocab) + (p * jnp.log(p + eps)).sum(-1)
    return jnp.where(_positions(batch.streams["forget"], options), per_pos, 0.0).sum(-1)
