"""Model hyperparameters as one frozen dataclass shared by every family.

Fields mirror Hugging Face `config.json` names where they exist; `hf_config` keeps the
original dict so an export writes back every field we do not model ourselves.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def to_dtype(name_or_dtype: Any) -> Any:
    """Accept 'bfloat16', jnp.bfloat16 or np.dtype and return a jnp dtype."""
    if isinstance(name_or_dtype, str):
        key = name_or_dtype.replace("torch.", "")
        key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(key, key)
        if key not in DTYPES:
            from ..errors import ConfigError

            raise ConfigError(f"unknown dtype {name_or_dtype!r}; use one of {sorted(DTYPES)}")
        return DTYPES[key]
    return jnp.dtype(name_or_dtype).type


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # None, or a dict such as {"rope_type": "llama3", "factor": 8.0, ...}
    rope_scaling: tuple | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q/k/v
    attention_out_bias: bool = False  # bias on o_proj (Llama's attention_bias; not Qwen2's)
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple | None = None
    pad_token_id: int | None = None
    # Runtime options, not part of the checkpoint.
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype
    remat: str = "none"  # "none" | "full" | "dots": per-block rematerialization policy
    hf_config_json: str = "{}"  # the original config.json, as text so the config stays hashable
    # Family-specific architecture switches as sorted (key, value) pairs (models/decoder.py).
    arch: tuple = ()

    @property
    def rope_scaling_dict(self) -> dict | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.arch).get(key, default)

    @property
    def hf_config(self) -> dict:
        return json.loads(self.hf_config_json)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
