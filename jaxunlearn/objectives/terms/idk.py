"""IDK: train the refusal on the forget questions, tokNLL(idk|q_f)."""

from ..registry import register_term
from .common import sum_logp, tokens


@register_term("IDK", "forget", "tokNLL(idk|q_f)", ("forget_idk",), tokens("forget_idk"))
def idk(pol, ref, batch, options):
    return -sum_logp(pol["forget_idk"], batch.streams["forget_idk"])
