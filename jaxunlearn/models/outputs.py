"""What a causal LM forward returns."""

from __future__ import annotations

import flax.struct
import jax

from .cache import KVCache
from .vocab_head import VocabHead


@flax.struct.dataclass
class CausalLMOutput:
    logits: jax.Array | None  # [B, T, V], fp32; None when the forward returned `head` instead
    hidden_states: jax.Array | None = None  # [layers + 1, B, T, D], transformers' convention
    cache: KVCache | None = None
    head: VocabHead | None = None  # forward(vocab_chunk=...): the head for blockwise statistics
