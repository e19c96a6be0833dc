"""The model section of the run config: what to load and how (checkpoints read it)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..settings import setting


@dataclasses.dataclass
class ModelSection:
    path: str = setting(
        "smollm2-135m-instruct", "the policy's start: HF dir, HF-Flax dir, .gguf, hub id or built-in asset"
    )
    dtype: str = setting(
        "float32",
        "parameter (master weight) dtype of the policy: float32, bfloat16 (training needs "
        "train.low_precision_params), float16",
    )
    compute_dtype: str | None = setting(
        None, "matmul and activation dtype (null: dtype); bfloat16 with float32 parameters is mixed precision"
    )
    reference_path: str | None = setting(None, "frozen reference model (null: the policy's start)")
    reference_dtype: str | None = setting(None, "dtype of the frozen reference (null: model.dtype); bfloat16 halves it")
    remat: Literal["none", "full", "dots"] = setting(
        "dots",
        "per-block rematerialization in the backward pass: dots keeps the matmul outputs and recomputes the rest "
        "(less memory and, on CPU, faster than none: see docs/benchmarks.md); full keeps only each block's input",
    )
    attention: Literal["auto", "xla", "jax_xla", "cudnn", "splash", "splash_interpret"] = setting(
        "auto",
        "attention in right-padded causal forwards (training, scoring): auto = cuDNN flash attention on GPU, "
        "splash on TPU, xla elsewhere; xla: always the einsum path; prefix-tree masks and decoding always use xla",
    )
    matmul_precision: Literal["auto", "highest", "high", "default"] = setting(
        "auto", "matmul precision; auto: highest for fp32 compute (no TF32 / bf16 passes), default for bf16"
    )
    allow_pickle: bool = setting(False, "allow pickled pytorch_model.bin (loaded with torch weights_only=True)")
