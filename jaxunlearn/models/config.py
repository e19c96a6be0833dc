"""Model hyperparameters as one frozen dataclass shared by every family.

Fields mirror Hugging Face `config.json` names where they exist; `hf_config` keeps the
original dict so an export writes back every field we do not model ourselves.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

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
class Architecture:
    """The decoder's switches (models/decoder.py). The defaults are Llama's; each family's
    config.json translation sets the rest."""

    norm: Literal["rms", "layer", "rms_plus_one"] = "rms"  # RMSNorm; LayerNorm with bias; Gemma's (1 + w)
    positions: Literal["rope", "learned"] = "rope"  # GPT-2: a learned position table
    rotary_dim: int | None = None  # partial rotary on the first dims (None: head_dim)
    qkv: Literal["separate", "fused", "fused_per_head"] = "separate"  # GPT-2 [q | k | v]; NeoX per head
    mlp: Literal["gated", "plain"] = "gated"  # SwiGLU / GeGLU, or fc1 -> act -> fc2
    act: str = "silu"  # a key of layers.ACTIVATIONS
    residual: Literal["sequential", "parallel_shared_norm", "parallel"] = "sequential"  # Phi; NeoX
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    embed_scale: bool = False  # Gemma: embeddings times sqrt(hidden)
    attn_scale: float | None = None  # None: head_dim^-1/2 (Gemma-2: query_pre_attn_scalar^-1/2)
    attn_softcap: float | None = None  # Gemma-2's tanh soft-capping of scores
    final_softcap: float | None = None  # ... and of logits
    sandwich_norms: bool = False  # Gemma-2: norms after attention and MLP too
    sliding_layers: tuple[bool, ...] | None = None  # which layers use the window (None: all, when one is set)


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    """Low-rank adapters on the named projections: W x + scale * B(A(x)), with
    scale = alpha / rank (rsLoRA: alpha / sqrt(rank))."""

    rank: int
    alpha: float
    targets: tuple[str, ...]  # parameter names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
    rslora: bool = False
    dropout: float = 0.0  # on the adapter's input, in training steps only (PEFT's lora_dropout)

    @property
    def scale(self) -> float:
        return self.alpha / (self.rank**0.5 if self.rslora else self.rank)


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
    norm_eps: float = 1e-6  # epsilon of every norm (RMSNorm or LayerNorm)
    rope_theta: float = 10000.0
    # None, or a dict such as {"rope_type": "llama3", "factor": 8.0, ...}
    rope_scaling: tuple | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple | None = None
    pad_token_id: int | None = None
    # Runtime options, not part of the checkpoint.
    param_dtype: str = "float32"
    compute_dtype: str = "float32"  # matmuls and activations (param_dtype: the stored weights)
    remat: str = "none"  # "none" | "full" | "dots": per-block rematerialization policy
    attention: str = "auto"  # attention_kernels.ATTENTION_CHOICES: fused kernel dispatch
    hf_config_json: str = "{}"  # the original config.json, as text so the config stays hashable
    arch: Architecture = Architecture()  # the decoder's switches
    lora: LoRASpec | None = None  # adapters added by models.lora.add_lora (never part of a checkpoint)

    @property
    def rope_scaling_dict(self) -> dict | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    @property
    def hf_config(self) -> dict:
        return json.loads(self.hf_config_json)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
