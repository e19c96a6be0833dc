"""UNDIAL: self-distillation on the reference's logits with the true token lowered by beta."""

import dataclasses

import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import distillation_cross_entropy, next_token_targets
from .common import tokens


@dataclasses.dataclass(frozen=True)
class UNDIALOptions:
    undial_beta: float = option(10.0, "how far the true token's reference logit is lowered")


@register_term(
    "UNDIAL",
    "forget",
    "CE(theta, softmax(ref logits - b onehot))",
    ("forget",),
    tokens("forget"),
    ref_streams=("forget",),
    options=UNDIALOptions,
)
def undial(pol, ref, batch, options):
    targets, mask = next_token_targets(batch.streams["forget"].labels)
    ce = distillation_cross_entropy(ref["forget"].logits, pol["forget"].logits, targets, options.undial_beta)
    return jnp.where(mask, ce, 0.0)[:, :-1].sum(-1)
