"""What an objective term is, and the options every term reads.

A term's loss is `sum numerator / sum denominator`, both given per row. The denominator
(a count of tokens, positions or sequences) depends only on the batch, so it is turned
into a weight per row once over the whole global batch (Objective.row_weights) and each
micro-batch contributes sum(weight * numerator): the accumulated loss equals the
full-batch loss exactly (never a mean of means). The paper code's estimator, a mean per
group of k rows (HF Trainer's per-device micro-batch) averaged over the groups, is the same
sum with other weights.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.struct
import jax


@dataclasses.dataclass(frozen=True)
class ObjectiveOptions:
    beta: float = 0.1  # NPO, DPO, AP
    simnpo_beta: float = 4.5
    simnpo_delta: float = 0.0
    me_direction: str = "uniform_ce"  # uniform_ce (paper code) | kl_to_uniform (paper text)
    me_epsilon: float = 0.0  # 0: exact log_softmax; 1e-12: the paper code's log(softmax + 1e-12)
    me_positions: str = "prompt_and_answer"  # all_padded (paper scripts) | prompt_and_answer | answer
    kl_positions: str = "attended"  # attended | all_padded (paper code: sum / (B*L))
    undial_beta: float = 10.0
    wga_beta: float = 1.0
    rmu_layer: int = 7
    rmu_steering_coeff: float = 20.0
    rmu_seed: int = 0
    rmu_trainable: str = "mlp"  # mlp: gate/up/down of layers l-2..l | down_proj: their down_proj | all
    dist_neg_weight: float = 1.0
    dist_pos_weight: float = 1.0


@flax.struct.dataclass
class StreamOutputs:
    """A model's outputs on one stream: logits [B, T, V], hidden states when asked."""

    logits: jax.Array
    hidden_states: jax.Array | None = None  # [layers + 1, B, T, D]


@dataclasses.dataclass(frozen=True)
class Term:
    name: str
    kind: str  # "forget" | "retain"
    formula: str  # SPEC section 2
    policy_streams: tuple[str, ...]  # streams the policy forward must cover
    ref_streams: tuple[str, ...]  # streams the frozen reference must cover (empty: none)
    numerator: Callable  # (policy, ref, batch, opts) -> per-row sums [B]
    denominator: Callable  # (batch, opts) -> per-row counts [B]
    needs_hidden: bool = False

    @property
    def needs_reference(self) -> bool:
        return bool(self.ref_streams)
