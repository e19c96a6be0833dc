"""Phi-1.5 / Phi-2 (model_type phi): parallel attention and MLP on one LayerNorm, partial
rotary, biases everywhere, gelu_new MLP, final LayerNorm, lm_head with a bias."""

from __future__ import annotations

from ..errors import CheckpointError
from .config import ModelConfig
from .decoder import DecoderForCausalLM
from .family_common import activation, arch, common_to_hf, rope_settings, token_ids
from .registry import Family, hf_json, register, required

NAME_TABLE = (
    ("embed", "model.embed_tokens.weight", None, "embedding"),
    ("layers/attn_norm", "model.layers.{i}.input_layernorm.weight", None, "layernorm"),
    ("layers/attn_norm_bias", "model.layers.{i}.input_layernorm.bias", None, "bias"),
    ("layers/q_proj", "model.layers.{i}.self_attn.q_proj.weight", None, "linear"),
    ("layers/q_bias", "model.layers.{i}.self_attn.q_proj.bias", None, "bias"),
    ("layers/k_proj", "model.layers.{i}.self_attn.k_proj.weight", None, "linear"),
    ("layers/k_bias", "model.layers.{i}.self_attn.k_proj.bias", None, "bias"),
    ("layers/v_proj", "model.layers.{i}.self_attn.v_proj.weight", None, "linear"),
    ("layers/v_bias", "model.layers.{i}.self_attn.v_proj.bias", None, "bias"),
    ("layers/o_proj", "model.layers.{i}.self_attn.dense.weight", None, "linear"),
    ("layers/o_bias", "model.layers.{i}.self_attn.dense.bias", None, "bias"),
    ("layers/up_proj", "model.layers.{i}.mlp.fc1.weight", None, "linear"),
    ("layers/up_bias", "model.layers.{i}.mlp.fc1.bias", None, "bias"),
    ("layers/down_proj", "model.layers.{i}.mlp.fc2.weight", None, "linear"),
    ("layers/down_bias", "model.layers.{i}.mlp.fc2.bias", None, "bias"),
    ("final_norm", "model.final_layernorm.weight", None, "layernorm"),
    ("final_norm_bias", "model.final_layernorm.bias", None, "bias"),
    ("lm_head", "lm_head.weight", None, "linear"),
    ("lm_head_bias", "lm_head.bias", None, "bias"),
)


def phi_config_from_hf(cfg: dict) -> ModelConfig:
    if cfg.get("qk_layernorm"):
        raise CheckpointError("config.json qk_layernorm=true is not supported for phi")
    hidden, heads = int(required(cfg, "hidden_size")), int(required(cfg, "num_attention_heads"))
    head_dim = hidden // heads
    theta, partial = rope_settings(cfg, default_partial=0.5)
    return ModelConfig(
        model_type="phi",
        vocab_size=int(required(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(required(cfg, "intermediate_size")),
        num_layers=int(required(cfg, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
        rope_theta=theta,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        **token_ids(cfg),
        hf_config_json=hf_json(cfg),
        arch=arch(
            norm="layer",
            rotary_dim=int(head_dim * partial),
            mlp="plain",
            act=activation(cfg, "hidden_act", "phi"),
            residual="parallel_shared_norm",
            qkv_bias=True,
            out_bias=True,
            mlp_bias=True,
            lm_head_bias=True,
        ),
    )


def phi_config_to_hf(c: ModelConfig) -> dict:
    return common_to_hf(
        c,
        "PhiForCausalLM",
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        hidden_act=c.arch.act,
        layer_norm_eps=c.norm_eps,
        max_position_embeddings=c.max_position_embeddings,
    )


PHI = register(
    Family(
        name="phi",
        model_types=("phi",),
        module=DecoderForCausalLM,
        name_table=NAME_TABLE,
        config_from_hf=phi_config_from_hf,
        config_to_hf=phi_config_to_hf,
    )
)
