"""GPT-NeoX / Pythia (model_type gpt_neox): fused query_key_value laid out per head,
partial rotary, parallel residual when configured, LayerNorms with biases, untied
embed_out."""

from __future__ import annotations

from .config import ModelConfig
from .decoder import DecoderForCausalLM
from .family_common import activation, arch, common_to_hf, rope_settings, token_ids
from .registry import Family, hf_json, register, required

_L = "gpt_neox.layers.{i}"
NAME_TABLE = (
    ("embed", "gpt_neox.embed_in.weight", None, "embedding"),
    ("layers/attn_norm", f"{_L}.input_layernorm.weight", None, "layernorm"),
    ("layers/attn_norm_bias", f"{_L}.input_layernorm.bias", None, "bias"),
    ("layers/qkv_proj", f"{_L}.attention.query_key_value.weight", None, "linear"),
    ("layers/qkv_bias", f"{_L}.attention.query_key_value.bias", None, "bias"),
    ("layers/o_proj", f"{_L}.attention.dense.weight", None, "linear"),
    ("layers/o_bias", f"{_L}.attention.dense.bias", None, "bias"),
    ("layers/mlp_norm", f"{_L}.post_attention_layernorm.weight", None, "layernorm"),
    ("layers/mlp_norm_bias", f"{_L}.post_attention_layernorm.bias", None, "bias"),
    ("layers/up_proj", f"{_L}.mlp.dense_h_to_4h.weight", None, "linear"),
    ("layers/up_bias", f"{_L}.mlp.dense_h_to_4h.bias", None, "bias"),
    ("layers/down_proj", f"{_L}.mlp.dense_4h_to_h.weight", None, "linear"),
    ("layers/down_bias", f"{_L}.mlp.dense_4h_to_h.bias", None, "bias"),
    ("final_norm", "gpt_neox.final_layer_norm.weight", None, "layernorm"),
    ("final_norm_bias", "gpt_neox.final_layer_norm.bias", None, "bias"),
    ("lm_head", "embed_out.weight", None, "linear"),
)


def neox_config_from_hf(cfg: dict) -> ModelConfig:
    hidden, heads = int(required(cfg, "hidden_size")), int(required(cfg, "num_attention_heads"))
    head_dim = hidden // heads
    theta, partial = rope_settings(cfg, theta_key="rotary_emb_base", partial_key="rotary_pct", default_partial=0.25)
    bias = bool(cfg.get("attention_bias", True))
    return ModelConfig(
        model_type="gpt_neox",
        vocab_size=int(required(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(required(cfg, "intermediate_size")),
        num_layers=int(required(cfg, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=heads,
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
            qkv="fused_per_head",
            mlp="plain",
            act=activation(cfg, "hidden_act", "gpt_neox"),
            residual="parallel" if cfg.get("use_parallel_residual", True) else "sequential",
            qkv_bias=bias,
            out_bias=bias,
            mlp_bias=True,
        ),
    )


def neox_config_to_hf(c: ModelConfig) -> dict:
    return common_to_hf(
        c,
        "GPTNeoXForCausalLM",
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        hidden_act=c.arch.act,
        layer_norm_eps=c.norm_eps,
        use_parallel_residual=c.arch.residual == "parallel",
        max_position_embeddings=c.max_position_embeddings,
    )


GPT_NEOX = register(
    Family(
        name="gpt_neox",
        model_types=("gpt_neox",),
        module=DecoderForCausalLM,
        name_table=NAME_TABLE,
        config_from_hf=neox_config_from_hf,
        config_to_hf=neox_config_to_hf,
    )
)
