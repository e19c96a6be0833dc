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
from ..parallel import constrain_batch
from .cache import KVCache
from .outputs import CausalLMOutput

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
        h = constrain_batch(h)
        kv = None if layer_cache is None else layer_cache[:2]
        return (h, kv), (h if output_hidden_states else None)

    if config.remat != "none":
        body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    kv = (cache.k, cache.v) if cache is not None else None
    layers = jnp.arange(config.num_layers, dtype=jnp.int32)
    (h, kv), hidden = jax.lax.scan(body, (h, kv), (block_params, layers, per_layer))
    return h, hidden, kv


def token_positions(input_ids, attention_mask, positions, cache: KVCache | None):
    """(attention mask, query positions, key validity, key positions, cache start) for a
    forward over input_ids [B, T], continuing the cache when one is given."""
    b, t = input_ids.shape
    if attention_mask is None:
        attention_mask = jnp.ones((b, t), jnp.int32)
    start = cache.index if cache is not None else 0
    if positions is None:
        positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
    if cache is None:
        return attention_mask, positions, attention_mask, positions, start
    key_valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask.astype(cache.valid.dtype), (0, start))
    key_pos = jax.lax.dynamic_update_slice(cache.positions, positions.astype(jnp.int32), (0, start))
    return attention_mask, positions, key_valid, key_pos, start


def assemble_output(logits, h_emb, per_layer, h_final, kv, key_valid, key_pos, start, t: int,
                    output_hidden_states: bool):
    """CausalLMOutput; hidden states follow transformers: embeddings, outputs of layers
    0..L-2, final normed state."""
    logits = constrain_batch(logits)
    hidden = None
    if output_hidden_states:
        hidden = jnp.concatenate([h_emb[None], per_layer[:-1], h_final[None]], axis=0)
    new_cache = None
    if kv is not None:
        new_cache = KVCache(k=kv[0], v=kv[1], valid=key_valid, positions=key_pos, index=start + t)
    return CausalLMOutput(logits=logits.astype(jnp.float32), hidden_states=hidden, cache=new_cache)
