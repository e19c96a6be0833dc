"""Key/value cache for incremental decoding, one pytree for all layers."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVCache:
    k: jax.Array  # [layers, B, S, kv_heads, head_dim]
    v: jax.Array  # [layers, B, S, kv_heads, head_dim]
    valid: jax.Array  # [B, S] 1 where a slot holds a real (non-padding) token
    positions: jax.Array  # [B, S] RoPE position of each slot
    index: jax.Array  # scalar int32: slots filled so far

    @classmethod
    def zeros(cls, layers, batch, length, kv_heads, head_dim, dtype) -> "KVCache":
        shape = (layers, batch, length, kv_heads, head_dim)
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            valid=jnp.zeros((batch, length), jnp.int32),
            positions=jnp.zeros((batch, length), jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )
