"""DIST (Chen et al. 2024, this project's reading; no code is public).

Negative distance: total variation between the policy's next-token distribution and the
flagged (undesirable) output, 1 - p(y_t), is pushed up, i.e. sum_t p_theta(y_t) goes down;
positive term: the pooled final hidden state of the forget answer is pulled toward the
centroid of the expected outputs (the reference model's pooled final states on the
`forget_expected` stream: a flagged row's `expected` field, its reference answer when it
was flagged as hallucinated, else a refusal). The centroid is the batch's
(dist_centroid=batch) or computed once per run over every forget row and reused
(dist_centroid=run, written to the run directory as dist_centroid.npy).
"""

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from ..base import option
from ..registry import register_term
from ..token_stats import token_logp
from .common import rows


@dataclasses.dataclass(frozen=True)
class DISTOptions:
    dist_neg_weight: float = option(1.0, "weight of the negative distance to the flagged output")
    dist_pos_weight: float = option(1.0, "weight of the pull toward the expected outputs' centroid")
    dist_centroid: Literal["batch", "run"] = option(
        "batch", "the expected outputs' centroid: of the batch's rows, or of every forget row computed once per run"
    )


def _pooled_final(out, labels) -> jax.Array:
    """Mean of the final (normed) hidden state over the supervised positions, [B, D]."""
    h = out.hidden_states[-1].astype(jnp.float32)
    mask = (labels != -100).astype(jnp.float32)[..., None]
    return (h * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)


CENTROID = "dist_centroid"


def flagged_probability(pol, batch) -> jax.Array:
    """The negative distance: the policy's mean per-token probability of the flagged output, [B]."""
    logp, mask = token_logp(pol["forget"].logits, batch.streams["forget"].labels)
    return jnp.where(mask, jnp.exp(logp), 0.0).sum(-1) / jnp.maximum(mask.sum(-1), 1)


def run_centroid(forward, streams, options):
    """The expected outputs' centroid over every forget row, once (dist_centroid=run):
    {dist_centroid: the centroid repeated per row [N, D]} (the step slices rows)."""
    if options.dist_centroid != "run":
        return None
    pooled = [np.asarray(_pooled_final(out, labels)) for out, labels in forward("forget_expected")]
    centroid = np.concatenate(pooled).mean(0)
    n = len(streams["forget_expected"])
    return {CENTROID: np.broadcast_to(centroid.astype(np.float32), (n, centroid.shape[0])).copy()}


@register_term(
    "DIST",
    "forget",
    "l_neg p(y) + l_pos ||pool h - centroid||^2 (Chen et al.)",
    ("forget",),
    rows("forget"),
    ref_streams=("forget_expected",),
    needs_hidden=True,
    options=DISTOptions,
    precompute=run_centroid,
)
def dist(pol, ref, batch, options):
    labels = batch.streams["forget"].labels
    neg = flagged_probability(pol, batch)
    if CENTROID in batch.reference_nll:  # computed once per run
        centroid = batch.reference_nll[CENTROID]
    else:
        expected = _pooled_final(ref["forget_expected"], batch.streams["forget_expected"].labels)
        centroid = jax.lax.stop_gradient(expected.mean(0))
    pos = ((_pooled_final(pol["forget"], labels) - centroid) ** 2).mean(-1)
    return options.dist_neg_weight * neg + options.dist_pos_weight * pos
