"""GA: gradient ascent on the forget answers, -tokNLL(a_f|q_f)."""

from ..registry import register_term
from .common import sum_logp, tokens


@register_term("GA", "forget", "-tokNLL(a_f|q_f)", ("forget",), tokens("forget"))
def ga(pol, ref, batch, options):
    return sum_logp(pol["forget"], batch.streams["forget"])  # -tokNLL: + sum log p
