"""Key/value cache for incremental decoding, one pytree for all layers."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVCache:
    # Keys [layers, B, kv_heads, head_dim, S] and values [layers, B, kv_heads, S, head_dim]
    # (the scanned layers), or tuples of per-layer arrays (the unrolled layers; split_layers).
    k: jax.Array | tuple
    v: jax.Array | tuple
    valid: jax.Array  # [B, S] 1 where a slot holds a real (non-padding) token
    positions: jax.Array  # [B, S] position of each slot
    index: jax.Array  # scalar int32: slots filled so far

    @classmethod
    def zeros(cls, layers, batch, length, kv_heads, head_dim, dtype) -> "KVCache":
        return cls(
            k=jnp.zeros((layers, batch, kv_heads, head_dim, length), dtype),
            v=jnp.zeros((layers, batch, kv_heads, length, head_dim), dtype),
            valid=jnp.zeros((batch, length), jnp.int32),
            positions=jnp.zeros((batch, length), jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )

    @property
    def per_layer(self) -> bool:
        return isinstance(self.k, tuple)

    def split_layers(self) -> "KVCache":
        """The same cache as one array per layer, for the unrolled decoding loop."""
        if self.per_layer:
            return self
        n = self.k.shape[0]
        return self.replace(k=tuple(self.k[i] for i in range(n)), v=tuple(self.v[i] for i in range(n)))

    def take_rows(self, rows: jax.Array) -> "KVCache":
        """The cache of batch rows `rows` (int [b]), in that order."""
        take = lambda x, axis: jnp.take(x, rows, axis=axis)  # noqa: E731
        if self.per_layer:
            k, v = tuple(take(x, 0) for x in self.k), tuple(take(x, 0) for x in self.v)
        else:  # [layers, B, ...]
            k, v = take(self.k, 1), take(self.v, 1)
        return self.replace(k=k, v=v, valid=take(self.valid, 0), positions=take(self.positions, 0))
