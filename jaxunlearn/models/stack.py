"""Running the decoder layers, shared by every family: one `lax.scan` over the stacked
`layers` axis (training, scoring, prefill: per-block remat, fast compiles), or an unrolled
loop over per-layer parameters and caches (token-by-token decoding).

In the scan the cache rides in the carry as the whole [layers, B, kv, D, S] (keys) and
[layers, B, kv, S, D] (values) arrays and each layer writes only its new keys/values (a
dynamic_update_slice XLA performs in place), instead of scanning over per-layer caches
and stacking fresh copies as outputs, which rewrote the entire cache at every decoding
step. Keys and values are kept in the layouts attention multiplies in, so no step
transposes the cache.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CheckpointError
from ..parallel import constrain_batch
from .cache import KVCache
from .outputs import CausalLMOutput

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def layer_keys_values(layer_cache, k, v, index):
    """This layer's keys [B, kv, D, S] and values [B, kv, S, D], the layouts attention
    multiplies in.

    k/v are this call's [B, T, kv, D]. With a cache (k_all, v_all, layer), they are stored
    at position `index` of the layer's slot and the layer's whole cache is returned, with
    the updated cache: (layer_cache, k, v). layer None: k_all / v_all are one layer's own
    cache (the unrolled loop), updated as they are: a reshape around the update made XLA
    copy every layer's cache at every decoding step."""
    k, v = k.transpose(0, 2, 3, 1), jnp.swapaxes(v, 1, 2)
    if layer_cache is None:
        return None, k, v
    k_all, v_all, layer = layer_cache
    if layer is None:  # one layer's own cache (the unrolled loop)
        k_all = jax.lax.dynamic_update_slice(k_all, k.astype(k_all.dtype), (0, 0, 0, index))
        v_all = jax.lax.dynamic_update_slice(v_all, v.astype(v_all.dtype), (0, 0, index, 0))
        return (k_all, v_all, None), k_all, v_all
    k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, 0, 0, index))
    v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, 0, index, 0))
    return (k_all, v_all, layer), k_all[layer], v_all[layer]


def scan_layers(
    config, block: Callable, h, block_params, cache: KVCache | None, per_layer=None, output_hidden_states: bool = False
):
    """h after every layer: block(p, h, layer_cache, per_layer_x) -> (h, layer_cache).

    block_params stacked on a leading layers axis run as one `lax.scan`; a list of
    per-layer dicts (see `unstack_layers`) runs as an unrolled loop over a per-layer cache.
    Returns (h, hidden states of layers 0..L-2 stacked or None, (k, v) of the cache or None).
    """
    if isinstance(block_params, (list, tuple)):
        return _unrolled_layers(block, h, block_params, cache, per_layer, output_hidden_states)
    policy = REMAT_POLICIES.get(config.remat, "missing")
    if policy == "missing":
        raise CheckpointError(f"unknown remat policy {config.remat!r}; use one of {sorted(REMAT_POLICIES)}")
    if cache is not None and cache.per_layer:
        raise RuntimeError("a per-layer KV cache needs per-layer parameters (unstack_layers)")  # a caller's bug

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


def unstack_layers(block_params: dict, dtype, columns: tuple[str, ...] = ()) -> list[dict]:
    """Per-layer copies of stacked layer parameters in the compute dtype, made once before
    decoding.

    A scan reads each layer's weights with a dynamic slice, which XLA:CPU materializes: at
    one token per step, decoding spent more time copying weights than multiplying them.
    Separate arrays are plain arguments of an unrolled loop (no copies), at the price of a
    second copy of the layer weights while they are held and a longer compile. Cast here,
    once, so a bf16-compute model does not convert every weight at every token.

    columns: projection weights to hold transposed, [out, in], under `<name>_t`, for the
    faster product on CPUs where it is (see `decoder.proj`); the copy is made anyway."""
    dtype = jnp.dtype(dtype)
    n = len(next(iter(block_params.values())))
    return [
        {
            (f"{k}_t" if k in columns else k): _layer_of(v, np.int32(i), dtype, k in columns)
            for k, v in block_params.items()
        }
        for i in range(n)
    ]


@functools.partial(jax.jit, static_argnames=("dtype", "transpose"))
def _layer_of(stacked, index, dtype, transpose: bool = False):
    # the layer index is traced: one small program per weight shape (5 for SmolLM2), not one
    # per layer and tensor (270) nor one program with 270 outputs (1.8-2.3 s to compile)
    w = jax.lax.dynamic_index_in_dim(stacked, index, keepdims=False).astype(dtype)
    return w.T if transpose else w


def layer_params_as(block_params, layer_params, dtype):
    """The layer parameters a forward runs with, cast to the compute dtype: the model's
    stacked ones, or the per-layer list given to the forward (unrolled decoding)."""
    if layer_params is None:
        return {k: v.astype(dtype) for k, v in block_params.items()}
    return [{k: v.astype(dtype) for k, v in p.items()} for p in layer_params]


def _unrolled_layers(block, h, layer_params: list, cache, per_layer, output_hidden_states):
    if cache is not None and not cache.per_layer:
        raise RuntimeError("per-layer parameters need a per-layer KV cache (KVCache.split_layers)")  # a caller's bug
    hidden, ks, vs = [], [], []
    for i, p in enumerate(layer_params):
        x = None if per_layer is None else jax.tree.map(lambda a: a[i], per_layer)
        layer_cache = None if cache is None else (cache.k[i], cache.v[i], None)
        h, layer_cache = block(p, h, layer_cache, x)
        h = constrain_batch(h)
        if layer_cache is not None:
            ks.append(layer_cache[0])
            vs.append(layer_cache[1])
        if output_hidden_states:
            hidden.append(h)
    kv = None if cache is None else (tuple(ks), tuple(vs))
    return h, (jnp.stack(hidden) if output_hidden_states else None), kv


def token_positions(input_ids, attention_mask, positions, cache: KVCache | None):
    """(attention mask, query positions, key validity, key positions, cache start) for a
    forward over input_ids [B, T], continuing the cache when one is given.

    attention_mask [B, T] marks real tokens; [B, T, T] gives each query the keys it sees
    (ANDed with causality by position), without a cache."""
    b, t = input_ids.shape
    if attention_mask is None:
        attention_mask = jnp.ones((b, t), jnp.int32)
    if attention_mask.ndim == 3 and cache is not None:
        raise ValueError(
            "a per-query attention mask [B, T, T] cannot continue a KV cache; "
            "pass a [B, T] mask, or run without a cache"
        )
    start = cache.index if cache is not None else 0
    if positions is None:
        positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
    if cache is None:
        return attention_mask, positions, attention_mask, positions, start
    key_valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask.astype(cache.valid.dtype), (0, start))
    key_pos = jax.lax.dynamic_update_slice(cache.positions, positions.astype(jnp.int32), (0, start))
    return attention_mask, positions, key_valid, key_pos, start


def head_inputs(h, logits_to_keep):
    """The hidden states the LM head runs on: all (0), the last k (int k, as in
    transformers), or per row the positions in an int array [B, K]."""
    if isinstance(logits_to_keep, (int, np.integer)):
        return h[:, -int(logits_to_keep) :]
    return jnp.take_along_axis(h, logits_to_keep[..., None].astype(jnp.int32), axis=1)


def assemble_output(
    logits, h_emb, per_layer, h_final, kv, key_valid, key_pos, start, t: int, output_hidden_states: bool
):
    """CausalLMOutput; hidden states follow transformers: embeddings, outputs of layers
    0..L-2, final normed state."""
    if logits is not None:
        logits = constrain_batch(logits).astype(jnp.float32)
    hidden = None
    if output_hidden_states:
        hidden = jnp.concatenate([h_emb[None], per_layer[:-1], h_final[None]], axis=0)
    new_cache = None
    if kv is not None:
        new_cache = KVCache(k=kv[0], v=kv[1], valid=key_valid, positions=key_pos, index=start + t)
    return CausalLMOutput(logits=logits, hidden_states=hidden, cache=new_cache)
