"""ME (Yuan et al. 2025): maximize the entropy of the forget positions' next-token distribution."""

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import log_probs


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
    logits = pol["forget"].logits[:, :-1].astype(jnp.float32)
    vocab = logits.shape[-1]
    eps = options.me_epsilon
    if options.me_direction == "uniform_ce":  # KL(U || P) = -log V - mean_v log P_v = lse - mean_v z_v - log V
        if eps:  # the paper's code: log(softmax(z) + eps), which caps the terms of tiny P_v
            per_pos = -jnp.log(jax.nn.softmax(logits, axis=-1) + eps).mean(-1) - math.log(vocab)
        else:
            per_pos = jax.nn.logsumexp(logits, axis=-1) - logits.mean(-1) - math.log(vocab)
    else:  # KL(P || U) = log V - H(P)
        logp = log_probs(logits)
        per_pos = math.log(vocab) + (jnp.exp(logp) * (jnp.log(jnp.exp(logp) + eps) if eps else logp)).sum(-1)
    return jnp.where(_positions(batch.streams["forget"], options), per_pos, 0.0).sum(-1)
