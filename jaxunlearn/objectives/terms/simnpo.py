"""SimNPO (Fan et al. 2024), as SimNPO's and open-unlearning's code: -(2/b) log s(b (avgNLL - d));
no reference model."""

import dataclasses

import jax

from ..base import option
from ..registry import register_term
from ..token_stats import avg_nll
from .common import rows


@dataclasses.dataclass(frozen=True)
class SimNPOOptions:
    simnpo_beta: float = option(4.5, "SimNPO inverse temperature")
    simnpo_delta: float = option(0.0, "SimNPO reward margin, subtracted from avgNLL inside the product")


@register_term(
    "SimNPO", "forget", "-(2/b) mean log s(b (avgNLL - d))", ("forget",), rows("forget"), options=SimNPOOptions
)
def simnpo(pol, ref, batch, options):
    avg = avg_nll(pol["forget"].logits, batch.streams["forget"].labels)
    return -(2.0 / options.simnpo_beta) * jax.nn.log_sigmoid(options.simnpo_beta * (avg - options.simnpo_delta))
