"""What a causal LM forward returns."""

from __future__ import annotations

import flax.struct
import jax

from .cache import KVCache


@flax.struct.dataclass
class CausalLMOutput:
    logits: jax.Array  # [B, T, V], fp32
    hidden_states: jax.Array | None = None  # [layers + 1, B, T, D], transformers' convention
    cache: KVCache | None = None
