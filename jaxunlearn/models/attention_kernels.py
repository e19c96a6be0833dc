"""Fused attention kernels for causal, right-padded training and scoring forwards.

`model.attention` chooses: `auto` (cuDNN flash attention on GPU, Pallas splash attention
on TPU, the XLA einsum path elsewhere), `xla` (always the einsum path of
layers.dot_product_attention: fp32 [B, H, T, S] scores), `jax_xla` (the kernel call,
jax.nn.dot_product_attention, with its XLA implementation: how CPU tests check the
dispatch), `cudnn`, `splash`, or `splash_interpret` (the splash kernel in Pallas's
interpreter: TPU semantics on any machine, slowly; for tests).

A kernel serves only what it can: a forward without a KV cache, keys masked by right
padding only (a [B, S] mask whose ones are a prefix, which the caller vouches for with
`right_padded=True`), no score soft-capping, no sliding window, sequence lengths a
multiple of 128 for splash. Everything else (prefix-tree masks, decoding, Gemma-2) runs
the XLA path. Padded queries see the valid keys before them in every implementation, so
outputs at padded positions agree too (the `all_padded` options of ME and KL read them).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jax.sharding import PartitionSpec

from ..errors import ConfigError
from ..parallel import batch_mesh_axes

ATTENTION_CHOICES = ("auto", "xla", "jax_xla", "cudnn", "splash", "splash_interpret")
SPLASH_BLOCK = 128


def resolve(choice: str, platform: str | None = None) -> str:
    """The implementation `choice` names on `platform` (default: jax's default backend)."""
    if choice not in ATTENTION_CHOICES:
        raise ConfigError(f"model.attention={choice!r}: choose one of {', '.join(ATTENTION_CHOICES)}")
    if choice != "auto":
        return choice
    platform = platform or jax.default_backend()
    return {"gpu": "cudnn", "cuda": "cudnn", "tpu": "splash"}.get(platform, "xla")


def kernel_for(choice: str, *, seq_len: int, head_dim: int, dtype, softcap, sliding_window) -> str | None:
    """The fused kernel to use for a right-padded causal forward, or None for the XLA path."""
    impl = resolve(choice)
    if impl == "xla" or softcap is not None or sliding_window is not None:
        return None
    if impl.startswith("splash") and seq_len % SPLASH_BLOCK:
        return None
    if impl == "cudnn" and (jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16) or head_dim % 8 or head_dim > 256):
        return None  # cuDNN flash attention: half precision, head_dim a multiple of 8 up to 256
    return impl


def fused_attention(impl: str, q, k, v, key_lengths, scale: float):
    """Causal attention of q [B, T, H, D] over k, v [B, T, KV, D] where keys at positions >=
    key_lengths[b] are padding; returns [B, T, H, D]."""
    if impl in ("jax_xla", "cudnn"):
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=True,
            key_value_seq_lengths=key_lengths.astype(jnp.int32),
            implementation="xla" if impl == "jax_xla" else "cudnn",
        )
    if impl in ("splash", "splash_interpret"):
        return _splash(q, k, v, key_lengths, scale, interpret=impl == "splash_interpret")
    raise ValueError(f"no fused attention kernel {impl!r}")  # kernel_for returns only the above


@functools.lru_cache(maxsize=16)
def _splash_kernel(heads: int, seq_len: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    block = min(512, seq_len) if seq_len % 512 == 0 else SPLASH_BLOCK
    sizes = sk.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = sm.MultiHeadMask([sm.CausalMask((seq_len, seq_len)) for _ in range(heads)])
    return sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret), sk


def _splash(q, k, v, key_lengths, scale, interpret: bool):
    """Per device: a Pallas call is not partitioned by XLA, so under a mesh each device runs
    the kernel on its own rows (shard_map over the batch axes)."""
    axes = batch_mesh_axes(q.shape[0])
    run = functools.partial(_splash_rows, scale=scale, interpret=interpret)
    if not axes:
        return run(q, k, v, key_lengths)
    rows = PartitionSpec(axes)
    return jax.shard_map(run, in_specs=(rows, rows, rows, rows), out_specs=rows, check_vma=False)(q, k, v, key_lengths)


def _splash_rows(q, k, v, key_lengths, scale, interpret: bool):
    b, t, h, d = q.shape
    kernel, sk = _splash_kernel(h, t, interpret)
    # segment ids: every query in segment 1, keys past the row's length in segment 0, so a
    # padded query still sees the valid keys before it (as the XLA path does)
    kv_segments = (jnp.arange(t)[None, :] < key_lengths[:, None]).astype(jnp.int32)
    q_segments = jnp.ones((b, t), jnp.int32)

    def one_row(q_, k_, v_, q_seg, kv_seg):  # splash takes [heads, T, D] per sequence
        out = kernel(
            (q_ * jnp.asarray(scale, q_.dtype)).transpose(1, 0, 2),
            k_.transpose(1, 0, 2),
            v_.transpose(1, 0, 2),
            segment_ids=sk.SegmentIds(q=q_seg, kv=kv_seg),
        )
        return out.transpose(1, 0, 2)

    return jax.vmap(one_row)(q, k, v, q_segments, kv_segments)
