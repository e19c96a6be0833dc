"""Gemma and Gemma-2: RMSNorm scaled by (1 + w), embeddings times sqrt(hidden), GeGLU,
tied head; Gemma-2 adds norms after attention and MLP, tanh soft-capping of attention
scores and logits, query_pre_attn_scalar, and the sliding window on alternate layers."""

from __future__ import annotations

from ..errors import CheckpointError
from .config import ModelConfig
from .decoder import DecoderForCausalLM
from .family_common import activation, arch, common_to_hf, rope_settings, token_ids
from .registry import Family, hf_json, register, required

_L = "model.layers.{i}"
_COMMON = (
    ("embed", "model.embed_tokens.weight", None, "embedding"),
    ("layers/attn_norm", f"{_L}.input_layernorm.weight", None, "norm"),
    ("layers/q_proj", f"{_L}.self_attn.q_proj.weight", None, "linear"),
    ("layers/q_bias", f"{_L}.self_attn.q_proj.bias", None, "bias"),
    ("layers/k_proj", f"{_L}.self_attn.k_proj.weight", None, "linear"),
    ("layers/k_bias", f"{_L}.self_attn.k_proj.bias", None, "bias"),
    ("layers/v_proj", f"{_L}.self_attn.v_proj.weight", None, "linear"),
    ("layers/v_bias", f"{_L}.self_attn.v_proj.bias", None, "bias"),
    ("layers/o_proj", f"{_L}.self_attn.o_proj.weight", None, "linear"),
    ("layers/o_bias", f"{_L}.self_attn.o_proj.bias", None, "bias"),
    ("layers/gate_proj", f"{_L}.mlp.gate_proj.weight", None, "linear"),
    ("layers/up_proj", f"{_L}.mlp.up_proj.weight", None, "linear"),
    ("layers/down_proj", f"{_L}.mlp.down_proj.weight", None, "linear"),
    ("final_norm", "model.norm.weight", None, "norm"),
    ("lm_head", "lm_head.weight", None, "linear"),
)
GEMMA_TABLE = _COMMON + (("layers/mlp_norm", f"{_L}.post_attention_layernorm.weight", None, "norm"),)
GEMMA2_TABLE = _COMMON + (
    ("layers/post_attn_norm", f"{_L}.post_attention_layernorm.weight", None, "norm"),
    ("layers/mlp_norm", f"{_L}.pre_feedforward_layernorm.weight", None, "norm"),
    ("layers/post_mlp_norm", f"{_L}.post_feedforward_layernorm.weight", None, "norm"),
)


def gemma_config_from_hf(cfg: dict) -> ModelConfig:
    model_type = cfg.get("model_type", "gemma")
    hidden, heads = int(required(cfg, "hidden_size")), int(required(cfg, "num_attention_heads"))
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    theta, partial = rope_settings(cfg)
    if partial != 1.0:
        raise CheckpointError(f"config.json partial rotary {partial} is not supported for {model_type}")
    act = activation(cfg, "hidden_activation" if cfg.get("hidden_activation") else "hidden_act", model_type)
    act = "gelu_pytorch_tanh" if act == "gelu" else act  # transformers maps Gemma's legacy "gelu" to tanh
    bias = bool(cfg.get("attention_bias", False))
    switches = dict(norm="rms_plus_one", mlp="gated", act=act, embed_scale=True, qkv_bias=bias, out_bias=bias)
    window = None
    if model_type == "gemma2":
        layers = int(required(cfg, "num_hidden_layers"))
        types = cfg.get("layer_types") or [
            "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)
        ]
        window = cfg.get("sliding_window")
        switches.update(
            sandwich_norms=True,
            attn_scale=float(cfg.get("query_pre_attn_scalar", head_dim)) ** -0.5,
            attn_softcap=cfg.get("attn_logit_softcapping"),
            final_softcap=cfg.get("final_logit_softcapping"),
            sliding_layers=tuple(t == "sliding_attention" for t in types) if window else None,
        )
    return ModelConfig(
        model_type=model_type,
        vocab_size=int(required(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(required(cfg, "intermediate_size")),
        num_layers=int(required(cfg, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 8192)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        sliding_window=int(window) if window else None,
        **token_ids(cfg),
        hf_config_json=hf_json(cfg),
        arch=arch(**switches),
    )


def gemma_config_to_hf(c: ModelConfig) -> dict:
    name = "Gemma2ForCausalLM" if c.model_type == "gemma2" else "GemmaForCausalLM"
    return common_to_hf(
        c,
        name,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        rms_norm_eps=c.norm_eps,
        max_position_embeddings=c.max_position_embeddings,
    )


GEMMA = register(
    Family(
        name="gemma",
        model_types=("gemma",),
        module=DecoderForCausalLM,
        name_table=GEMMA_TABLE,
        config_from_hf=gemma_config_from_hf,
        config_to_hf=gemma_config_to_hf,
    )
)
GEMMA2 = register(
    Family(
        name="gemma2",
        model_types=("gemma2",),
        module=DecoderForCausalLM,
        name_table=GEMMA2_TABLE,
        config_from_hf=gemma_config_from_hf,
        config_to_hf=gemma_config_to_hf,
    )
)
