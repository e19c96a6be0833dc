"""AP, answer preservation (Yuan et al. 2025): prefer the retain answer to the refusal on
retain questions, -(1/b) log s(b (seqNLL(idk|q_r) - seqNLL(a_r|q_r))); no reference model."""

import jax

from ..registry import register_term
from ..token_stats import seq_nll
from .common import PreferenceOptions, rows


@register_term(
    "AP",
    "retain",
    "-(1/b) mean log s(b (seqNLL(idk|q_r) - seqNLL(a_r|q_r)))",
    ("retain", "retain_idk"),
    rows("retain"),
    options=PreferenceOptions,
)
def ap(pol, ref, batch, options):
    diff = seq_nll(pol["retain_idk"].logits, batch.streams["retain_idk"].labels) - seq_nll(
        pol["retain"].logits, batch.streams["retain"].labels
    )
    return -(1.0 / options.beta) * jax.nn.log_sigmoid(options.beta * diff)
