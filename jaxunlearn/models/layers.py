"""Pure building blocks shared by the decoder families: norms, RoPE, masks, attention.

All functions take and return arrays; numerics follow transformers' PyTorch models
(RMSNorm and softmax in fp32, RoPE tables in fp32 then cast), which the parity tests check.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ..errors import CheckpointError


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """y = w * x / sqrt(mean(x^2) + eps), the statistic in fp32 like transformers."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * normed.astype(x.dtype)


SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> jax.Array:
    """Inverse frequencies for rotate-half RoPE, with linear or Llama-3.1 scaling."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling["low_freq_factor"])
        high = float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(medium, smoothed, scaled)
    raise CheckpointError(f"rope_scaling type {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")


def rope_cos_sin(positions: jax.Array, inv_freq: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, head_dim] for integer positions [B, T]."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half RoPE on x [B, T, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def attention_mask(
    query_pos: jax.Array, key_pos: jax.Array, key_valid: jax.Array, sliding_window: int | None
) -> jax.Array:
    """Boolean [B, T, S]: causal, key not padding, and within the sliding window if any.

    key_valid is [B, S], or [B, T, S] for a mask per query (prefix trees packed in a row)."""
    valid = key_valid[:, None, :] if key_valid.ndim == 2 else key_valid
    allowed = (key_pos[:, None, :] <= query_pos[:, :, None]) & valid.astype(bool)
    if sliding_window is not None:
        allowed &= (query_pos[:, :, None] - key_pos[:, None, :]) < sliding_window
    return allowed


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    allowed: jax.Array,
    scale: float | None = None,
    softcap: float | None = None,
    query_blocks: int = 1,
) -> jax.Array:
    """Grouped-query attention.

    q [B, T, H, D]; keys [B, KV, D, S] and values [B, KV, S, D] (the KV cache's layouts),
    with H a multiple of KV; allowed [B, T, S]. The query groups of each KV head are folded
    into the rows of one batched matmul over (B, KV) whose right operand is already in
    (contracted, output) order, so nothing is transposed per call (decoding read a [S, D]
    key cache 4x slower than the same-size value cache). Scores (times `scale`, default
    D^-1/2, then Gemma-2's tanh soft-capping if given) and softmax in fp32. A fully masked
    row (a padding query) gets uniform weights rather than NaN, like transformers' SDPA.

    The backward recomputes the probabilities from the saved max and normalizer (a custom VJP,
    as flash attention does), so training keeps [B, KV, groups, T] per layer instead of the
    fp32 [B, H, T, S] scores and probabilities.

    query_blocks > 1 (self-attention, T == S, a multiple of it): the queries go in that many
    blocks, each against the keys up to its own end only, which skips the products above the
    diagonal. The caller vouches that no query sees a later slot and every query sees one at
    least (prefix trees: ancestors come first, and each node sees itself); a fully masked
    row would get uniform weights over its block's keys, not over all of them.
    """
    t, s = q.shape[1], k.shape[-1]
    if query_blocks > 1 and t == s and t % query_blocks == 0:
        size = t // query_blocks
        parts = [
            dot_product_attention(
                q[:, i * size : end], k[..., :end], v[:, :, :end], allowed[:, i * size : end, :end], scale, softcap
            )
            for i, end in enumerate(range(size, t + 1, size))
        ]
        return jnp.concatenate(parts, axis=1)
    b, t, h, d = q.shape
    kv = k.shape[1]
    groups = h // kv
    qg = q.reshape(b, t, kv, groups, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, groups * t, d)
    out = _attention(qg, k, v, allowed, scale if scale is not None else 1.0 / math.sqrt(d), softcap)
    return out.reshape(b, kv, groups, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def _scores(qg, k, allowed, scale, softcap):
    """Masked fp32 scores [B, KV, groups, T, S] and the pre-cap ones (for the backward)."""
    b, kv, _, _ = qg.shape
    t = allowed.shape[1]
    raw = jnp.einsum("bkqd,bkds->bkqs", qg, k, preferred_element_type=jnp.float32)
    raw = raw.reshape(b, kv, -1, t, raw.shape[-1]) * scale
    capped = jnp.tanh(raw / softcap) * softcap if softcap is not None else raw
    return jnp.where(allowed[:, None, None, :, :], capped, jnp.finfo(jnp.float32).min), raw


def row_sum(x: jax.Array) -> jax.Array:
    """Sum over the last axis, in fp32, as a product with ones: XLA:CPU runs a reduction
    over it on one core but a product on all of them (a log-partition over [1024, 49152]:
    130 -> 80 ms on 2 cores). HIGHEST precision, so no TF32 or bf16 pass touches a sum."""
    ones = jnp.ones((x.shape[-1],), jnp.float32)
    return jnp.einsum("...s,s->...", x, ones, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(qg, k, v, allowed, scale, softcap):
    return _attention_fwd(qg, k, v, allowed, scale, softcap)[0]


def _attention_fwd(qg, k, v, allowed, scale, softcap):
    b, kv, rows, _ = qg.shape
    scores, _ = _scores(qg, k, allowed, scale, softcap)
    # the softmax's max and normalizer, kept apart: a fully masked row's max + log(S) rounds
    # back to the max in fp32, so one log-partition would give it weights of 1, not 1/S
    top = jnp.max(scores, axis=-1)
    weights = jnp.exp(scores - top[..., None])
    # the division after the product with the values: over D columns, not S (30 layers of a
    # 2 x 512-token scoring batch: 250 -> 198 ms on 2 CPU cores, with `row_sum`)
    norm = row_sum(weights)
    out = jnp.einsum("bkqs,bksd->bkqd", weights.astype(v.dtype).reshape(b, kv, rows, -1), v)
    out = (out.astype(jnp.float32) / norm.reshape(b, kv, rows, 1)).astype(v.dtype)
    return out, (qg, k, v, allowed, out, top, norm)


def _attention_bwd(scale, softcap, res, d_out):
    qg, k, v, allowed, out, top, norm = res
    b, kv, rows, _ = qg.shape
    scores, raw = _scores(qg, k, allowed, scale, softcap)
    p = jnp.exp(scores - top[..., None]) / norm[..., None]  # [B, KV, groups, T, S] fp32, recomputed
    p_flat = p.reshape(b, kv, rows, -1)
    dv = jnp.einsum("bkqs,bkqd->bksd", p_flat.astype(v.dtype), d_out)
    dp = jnp.einsum("bkqd,bksd->bkqs", d_out, v, preferred_element_type=jnp.float32).reshape(p.shape)
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1).reshape(top.shape)
    ds = jnp.where(allowed[:, None, None, :, :], p * (dp - delta[..., None]), 0.0)
    if softcap is not None:
        ds = ds * (1.0 - jnp.square(jnp.tanh(raw / softcap)))
    ds = (ds * scale).reshape(b, kv, rows, -1)
    dq = jnp.einsum("bkqs,bkds->bkqd", ds, k.astype(jnp.float32)).astype(qg.dtype)
    dk = jnp.einsum("bkqs,bkqd->bkds", ds, qg.astype(jnp.float32)).astype(k.dtype)
    return dq, dk, dv.astype(v.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


def layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array | None, eps: float) -> jax.Array:
    """LayerNorm with fp32 statistics."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * weight.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def rms_norm_plus_one(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Gemma's RMSNorm: the scale is (1 + w), applied in fp32 before casting back."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # erf, torch's nn.GELU()
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # tanh approximation
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def param(rngs, shape, axes, dtype, init="normal"):
    """An nnx.Param with its logical axes: ones, zeros or N(0, 0.02) (for random models)."""
    from flax import nnx

    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=axes)


def linear(x, w, b=None):
    y = x @ w
    return y if b is None else y + b


def linear_transposed(x, w_t, b=None):
    """x @ W from W's transpose [out, in], multiplied as W_t · xᵀ, then transposed back: for
    a few rows (decoding) XLA:CPU's kernels run this [out, rows] product faster than
    x @ W on some CPUs (Intel Xeon: SmolLM2's decoding steps 9-16% faster)."""
    y = jnp.moveaxis(jax.lax.dot_general(w_t, x, (((1,), (x.ndim - 1,)), ((), ()))), 0, -1)
    return y if b is None else y + b
