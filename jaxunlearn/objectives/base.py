"""What an objective term is, and the options every term reads.

A term's loss is `numerator / denominator`. The denominator (a count of tokens, positions
or sequences) depends only on the batch, so with gradient accumulation it is computed
once over the whole global batch and each micro-batch contributes numerator/denominator:
the accumulated loss equals the full-batch loss exactly (never a mean of means).
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
    me_positions: str = "prompt_and_answer"  # all_padded (paper scripts) | prompt_and_answer | answer
    kl_positions: str = "attended"  # attended | all_padded (paper code: sum / (B*L))
    undial_beta: float = 10.0
    wga_beta: float = 1.0
    rmu_layer: int = 7
    rmu_steering_coeff: float = 20.0
    rmu_seed: int = 0
    rmu_trainable: str = "mlp"  # mlp: gate/up/down of layers l-2..l | down_proj: down_proj only
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
    numerator: Callable  # (policy, ref, batch, opts) -> scalar sum
    denominator: Callable  # (batch, opts) -> scalar count
    needs_hidden: bool = False

    @property
    def needs_reference(self) -> bool:
        return bool(self.ref_streams)
