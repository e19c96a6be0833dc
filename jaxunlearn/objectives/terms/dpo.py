"""DPO with the refusal preferred over the forget answer (sequence sums)."""

import jax

from ..registry import register_term
from ..token_stats import seq_nll
from .common import PreferenceOptions, reference_seq_nll, rows


@register_term(
    "DPO",
    "forget",
    "-(2/b) mean log s(b h), refusal preferred",
    ("forget", "forget_idk"),
    rows("forget"),
    ref_streams=("forget", "forget_idk"),
    options=PreferenceOptions,
    precomputable_reference=True,
)
def dpo(pol, ref, batch, options):
    f, i = batch.streams["forget"].labels, batch.streams["forget_idk"].labels
    pi = -seq_nll(pol["forget_idk"].logits, i) + seq_nll(pol["forget"].logits, f)
    rf = -reference_seq_nll(ref, batch, "forget_idk") + reference_seq_nll(ref, batch, "forget")
    return -(2.0 / options.beta) * jax.nn.log_sigmoid(options.beta * (pi - rf))
