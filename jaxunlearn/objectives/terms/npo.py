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
def npo(pol, ref, batch, options):
    diff = reference_seq_nll(ref, batch, "forget") - seq_nll(pol["forget"].logits, batch.streams["forget"].labels)
    return -(2.0 / options.beta) * jax.nn.log_sigmoid(-options.beta * diff)
