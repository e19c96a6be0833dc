"""DIST_OUT: Chen et al.'s two distances measured on output distributions instead of
pooled hidden states (this project's second reading; no code is public).

Negative distance as DIST: the policy's probability of the flagged output, per token,
goes down. Positive distance: the policy's mean token NLL of the row's expected output
(the `forget_expected` stream: an `expected` field, the reference answer of a row flagged
as hallucinated, else a refusal) goes down, pulling its output distribution toward the
expected outputs. No reference model is needed.
"""

from ..registry import register_term
from ..token_stats import avg_nll
from .common import rows
from .dist import DISTOptions, flagged_probability


@register_term(
    "DIST_OUT",
    "forget",
    "l_neg p(y) + l_pos NLL(expected output) (Chen et al., on output distributions)",
    ("forget", "forget_expected"),
    rows("forget"),
    options=DISTOptions,
)
def dist_out(pol, ref, batch, options):
    expected_nll = avg_nll(pol["forget_expected"].logits, batch.streams["forget_expected"].labels)
    return options.dist_neg_weight * flagged_probability(pol, batch) + options.dist_pos_weight * expected_nll
