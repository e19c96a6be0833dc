"""Round-to-nearest weight quantization, dequantized back for evaluation: does the
forgetting survive int8 / int4 weights? (Zhang et al. 2024 found 4-bit quantization
brings much unlearned knowledge back.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import ConfigError


def quantize_dequantize(w: jax.Array, bits: int, group_size: int | None = None) -> jax.Array:
    """Symmetric round-to-nearest of a [..., in, out] kernel to `bits`, back in w's dtype.

    One scale per output channel (max |w| over the input axis), or per group of
    `group_size` input rows of each channel."""
    if not 2 <= bits <= 16:
        raise ConfigError(f"quantization to {bits} bits: use 2 to 16")
    levels = 2 ** (bits - 1) - 1  # int8: [-127, 127]; int4: [-7, 7]
    x = w.astype(jnp.float32)
    n_in = x.shape[-2]
    if group_size is None or group_size >= n_in:
        groups = x[..., None, :, :]  # [..., 1, in, out]
    else:
        if n_in % group_size:
            raise ConfigError(f"attack.quantize_group_size={group_size} does not divide the input size {n_in}")
        groups = x.reshape(*x.shape[:-2], n_in // group_size, group_size, x.shape[-1])
    scale = jnp.max(jnp.abs(groups), axis=-2, keepdims=True) / levels
    scale = jnp.where(scale == 0, 1.0, scale)
    q = jnp.clip(jnp.round(groups / scale), -levels, levels)
    return (q * scale).reshape(x.shape).astype(w.dtype)


def is_linear_kernel(path: tuple, leaf) -> bool:
    """The decoder layers' projection kernels (embeddings, head and norms stay as they are,
    as weight-only quantizers such as GPTQ / AWQ / bitsandbytes leave them)."""
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return "layers" in names and getattr(leaf, "ndim", 0) >= 3  # stacked [L, in, out]; norms are [L, d]


def quantize_params(params, bits: int, group_size: int | None = None):
    """The parameter tree with every linear kernel quantized and dequantized."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: quantize_dequantize(x, bits, group_size) if is_linear_kernel(path, x) else x, params
    )
