"""Matmul precision as a setting: JAX's default runs fp32 matmuls as TF32 on GPUs and as
bf16 passes on TPUs, which is too coarse for fp32 parity and fp32 evaluation numbers.

"auto" means "highest" for fp32 compute (exact fp32 matmuls everywhere) and "default"
for bf16 / fp16 compute (the operands are already low precision). The setting is applied
while functions are traced, so it reaches every jitted step and evaluation kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .errors import ConfigError

MATMUL_PRECISIONS = ("auto", "highest", "high", "default")


def resolve_matmul_precision(setting: str, compute_dtype) -> str:
    if setting not in MATMUL_PRECISIONS:
        raise ConfigError(f"matmul precision {setting!r} is not one of {', '.join(MATMUL_PRECISIONS)}")
    if setting != "auto":
        return setting
    return "highest" if jnp.dtype(compute_dtype) == jnp.float32 else "default"


def matmul_precision(setting: str, compute_dtype):
    """Context manager: jax.default_matmul_precision for the resolved setting."""
    return jax.default_matmul_precision(resolve_matmul_precision(setting, compute_dtype))
