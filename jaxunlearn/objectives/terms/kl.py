"""KL: keep the retain stream's next-token distributions, KL(pi_ref || pi_theta) per position."""

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import kl_divergence


@dataclasses.dataclass(frozen=True)
class KLOptions:
    kl_positions: Literal["attended", "all_padded"] = option(
        "attended", "attended positions, or all_padded: every position / (B*L) as the paper's code"
    )


def _positions(b, options) -> jax.Array:
    if options.kl_positions == "all_padded":
        return jnp.ones_like(b.attention_mask, dtype=bool)
    return b.attention_mask.astype(bool)


def _count(batch, options):
    return _positions(batch.streams["retain"], options).sum(-1).astype(jnp.float32)


@register_term(
    "KL",
    "retain",
    "KL(pi_ref || pi_theta) per position",
    ("retain",),
    _count,
    ref_streams=("retain",),
    options=KLOptions,
)
def kl(pol, ref, batch, options):
    per_pos = kl_divergence(ref["retain"].logits, pol["retain"].logits)
    return jnp.where(_positions(batch.streams["retain"], options), per_pos, 0.0).sum(-1)
