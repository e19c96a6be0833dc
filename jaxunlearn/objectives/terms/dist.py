"""DIST (Chen et al. 2024, this project's reading; no code is public).

Negative distance: total variation between the policy's next-token distribution and the
flagged (undesirable) output, 1 - p(y_t), is pushed up, i.e. sum_t p_theta(y_t) goes down;
positive term: the pooled final hidden state of the forget answer is pulled toward the
centroid of the expected outputs (the reference model's pooled states on the refusal
stream of the batch).
"""

import dataclasses

import jax
import jax.numpy as jnp

from ..base import option
from ..registry import register_term
from ..token_stats import token_logp
from .common import rows


@dataclasses.dataclass(frozen=True)
class DISTOptions:
    dist_neg_weight: float = option(1.0, "weight of the negative distance to the flagged output")
    dist_pos_weight: float = option(1.0, "weight of the pull toward the expected outputs' centroid")


def _pooled_final(out, labels) -> jax.Array:
    """Mean of the final (normed) hidden state over the supervised positions, [B, D]."""
    h = out.hidden_states[-1].astype(jnp.float32)
    mask = (labels != -100).astype(jnp.float32)[..., None]
    return (h * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)


@register_term(
    "DIST",
    "forget",
    "l_neg p(y) + l_pos ||pool h - centroid||^2 (Chen et al.)",
    ("forget",),
    rows("forget"),
    ref_streams=("forget_idk",),
    needs_hidden=True,
    options=DISTOptions,
)
def dist(pol, ref, batch, options):
    labels = batch.streams["forget"].labels
    logp, mask = token_logp(pol["forget"].logits, labels)
    neg = jnp.where(mask, jnp.exp(logp), 0.0).sum(-1) / jnp.maximum(mask.sum(-1), 1)
    centroid = jax.lax.stop_gradient(_pooled_final(ref["forget_idk"], batch.streams["forget_idk"].labels).mean(0))
    pos = ((_pooled_final(pol["forget"], labels) - centroid) ** 2).mean(-1)
    return options.dist_neg_weight * neg + options.dist_pos_weight * pos
