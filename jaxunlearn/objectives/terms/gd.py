"""GD: keep the retain answers, tokNLL(a_r|q_r) (also the finetuning objective)."""

from ..registry import register_term
from .common import sum_logp, tokens


@register_term("GD", "retain", "tokNLL(a_r|q_r)", ("retain",), tokens("retain"))
def gd(pol, ref, batch, options):
    return -sum_logp(pol["retain"], batch.streams["retain"])
