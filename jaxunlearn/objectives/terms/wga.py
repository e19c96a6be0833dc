"""WGA: gradient ascent weighted per token by p^beta (no gradient through the weight)."""

import dataclasses

import jax
import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import token_logp
from .common import tokens


@dataclasses.dataclass(frozen=True)
class WGAOptions:
    wga_beta: float = option(1.0, "exponent of the per-token weight p^beta")


@register_term(
    "WGA", "forget", "-mean p^b nll (weight without gradient)", ("forget",), tokens("forget"), options=WGAOptions
)
def wga(pol, ref, batch, options):
    logp, mask = token_logp(pol["forget"].logits, batch.streams["forget"].labels)
    weight = jax.lax.stop_gradient(jnp.exp(options.wga_beta * logp))  # p^beta, no gradient
    return jnp.where(mask, weight * logp, 0.0).sum(-1)  # -(w * nll) summed
