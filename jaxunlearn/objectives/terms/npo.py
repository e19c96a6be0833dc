"""NPO (Zhang et al. 2024): -(2/b) mean log s(-b (seqNLL_ref - seqNLL))."""

import jax

from ..registry import register_term
from ..token_stats import seq_nll
from .common import PreferenceOptions, reference_seq_nll, rows


@register_term(
    "NPO",
    "forget",
    "-(2/b) mean log s(-b (seqNLL_ref - seqNLL))",
    ("forget",),
    rows("forget"),
    ref_streams=("forget",),
    options=PreferenceOptions,
    precomputable_reference=True,
)
def npo(pol, ref, batch, o):
    diff = reference_seq_nll(ref, batch, "forget") - seq_nll(pol["forget"].logits, batch.streams["forget"].labels)
    return -(2.0 / o.beta) * jax.nn.log_sigmoid(-o.beta * diff)
