"""Running the stacked decoder layers: one `lax.scan` over the `layers` axis, shared by
every family, with per-block remat and the KV cache written in place.

The cache rides in the scan carry as the whole [layers, B, S, kv, D] arrays and each layer
writes only its new keys/values (a dynamic_update_slice XLA performs in place), instead of
scanning over per-layer caches and stacking fresh copies as outputs, which rewrote the
entire cache at every decoding step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..errors import CheckpointError
from .cache import KVCache

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def write_layer_cache(layer_cache, k, v, index):
    """Store this call's k/v [B, T, kv, D] at `index` of the layer's slot; return the cache
    and that layer's full keys and values."""
    k_all, v_all, layer = layer_cache
    k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, index, 0, 0))
    v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, index, 0, 0))
    return (k_all, v_all, layer), k_all[layer], v_all[layer]


def scan_layers(config, block: Callable, h, block_params: dict, cache: KVCache | None, per_layer=None,
                output_hidden_states: bool = False):
    """h after every layer: block(p, h, layer_cache, per_layer_x) -> (h, layer_cache).

    Returns (h, hidden states of layers 0..L-2 stacked or None, (k, v) of the cache or None).
    """
    policy = REMAT_POLICIES.get(config.remat, "missing")
    if policy == "missing":
        raise CheckpointError(f"unknown remat policy {config.remat!r}; use one of {sorted(REMAT_POLICIES)}")

    def body(carry, xs):
        h, kv = carry
        p, layer, x = xs
        h, layer_cache = block(p, h, None if kv is None else (*kv, layer), x)
        kv = None if layer_cache is None else layer_cache[:2]
        return (h, kv), (h if output_hidden_states else None)

    if config.remat != "none":
        body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    kv = (cache.k, cache.v) if cache is not None else None
    layers = jnp.arange(config.num_layers, dtype=jnp.int32)
    (h, kv), hidden = jax.lax.scan(body, (h, kv), (block_params, layers, per_layer))
    return h, hidden, kv
