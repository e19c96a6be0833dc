"""UNDIAL: self-distillation on the reference's logits with the true token lowered by beta."""

import dataclasses

import jax
import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import log_probs, shifted
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
    lg, targets, mask = shifted(pol["forget"].logits, batch.streams["forget"].labels)
    teacher = ref["forget"].logits[:, :-1].astype(jnp.float32)
    teacher = teacher - options.undial_beta * jax.nn.one_hot(targets, teacher.shape[-1], dtype=teacher.dtype)
    ce = -(jax.nn.softmax(teacher, axis=-1) * log_probs(lg)).sum(-1)
    return jnp.where(mask, ce, 0.0).sum(-1)
