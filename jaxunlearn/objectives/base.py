"""What an objective term is, the batch it reads, and the options every term declares.

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
from typing import Any, Callable

import flax.struct
import jax


def option(default: Any, help: str):  # noqa: A002 - the word the config reference uses
    """A term option: its default and the help text `--help` and docs/reference/config.md show."""
    return dataclasses.field(default=default, metadata={"help": help})


@flax.struct.dataclass
class StreamBatch:
    """One stream's rows: int32 [B, T] each; labels -100 where not supervised."""

    input_ids: jax.Array
    attention_mask: jax.Array
    labels: jax.Array


@flax.struct.dataclass
class StepBatch:
    """What one train step reads: named stream batches, and the reference model's sequence
    NLL per stream where it was computed once before training (train.precompute_reference)."""

    streams: dict[str, StreamBatch]
    reference_nll: dict[str, jax.Array] = flax.struct.field(default_factory=dict)

    @classmethod
    def from_arrays(cls, streams: dict[str, dict], reference_nll: dict | None = None) -> "StepBatch":
        """From {stream: {"input_ids", "attention_mask", "labels"}} (what BatchIterator yields)."""
        return cls({s: StreamBatch(**b) for s, b in streams.items()}, dict(reference_nll or {}))


@flax.struct.dataclass
class StreamOutputs:
    """A model's outputs on one stream: logits [B, T, V], hidden states when asked."""

    logits: jax.Array
    hidden_states: jax.Array | None = None  # [layers + 1, B, T, D]


@dataclasses.dataclass(frozen=True)
class Term:
    """Everything the engine needs to know of a term; the engine knows no term by name."""

    name: str
    kind: str  # "forget" | "retain"
    formula: str  # SPEC section 2
    policy_streams: tuple[str, ...]  # streams the policy forward must cover
    ref_streams: tuple[str, ...]  # streams the frozen reference must cover (empty: none)
    numerator: Callable  # (policy, ref, batch: StepBatch, options) -> per-row sums [B]
    denominator: Callable  # (batch: StepBatch, options) -> per-row counts [B]
    needs_hidden: bool = False  # hidden states of every layer in StreamOutputs
    options: type | None = None  # frozen dataclass of the term's options (fields made with `option`)
    # the reference part is the sequence NLL of ref_streams, so it can be computed once
    precomputable_reference: bool = False
    # (params, options, num_layers) -> 0/1 mask tree of the parameters the term trains, or None: all
    trainable_mask: Callable | None = None
    # (forward, streams, options) -> {key: per-row array} computed once before training from the
    # reference (forward(stream_name) yields its StreamOutputs batch by batch), or None when the
    # options do not ask for it; the step reads them as batch.reference_nll[key]
    precompute: Callable | None = None

    @property
    def needs_reference(self) -> bool:
        return bool(self.ref_streams)
