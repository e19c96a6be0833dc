"""GPT-2 (model_type gpt2): learned positions, fused c_attn, Conv1D weights stored
[in, out] (kind conv1d: no transpose), LayerNorms with biases, tied head."""

from __future__ import annotations

from ..errors import CheckpointError
from .config import ModelConfig
from .decoder import DecoderForCausalLM
from .family_common import activation, arch, common_to_hf, token_ids
from .registry import Family, hf_json, register, required

NAME_TABLE = (
    ("embed", "transformer.wte.weight", None, "embedding"),
    ("pos_embed", "transformer.wpe.weight", None, "embedding"),
    ("layers/attn_norm", "transformer.h.{i}.ln_1.weight", None, "layernorm"),
    ("layers/attn_norm_bias", "transformer.h.{i}.ln_1.bias", None, "bias"),
    ("layers/qkv_proj", "transformer.h.{i}.attn.c_attn.weight", None, "conv1d"),
    ("layers/qkv_bias", "transformer.h.{i}.attn.c_attn.bias", None, "bias"),
    ("layers/o_proj", "transformer.h.{i}.attn.c_proj.weight", None, "conv1d"),
    ("layers/o_bias", "transformer.h.{i}.attn.c_proj.bias", None, "bias"),
    ("layers/mlp_norm", "transformer.h.{i}.ln_2.weight", None, "layernorm"),
    ("layers/mlp_norm_bias", "transformer.h.{i}.ln_2.bias", None, "bias"),
    ("layers/up_proj", "transformer.h.{i}.mlp.c_fc.weight", None, "conv1d"),
    ("layers/up_bias", "transformer.h.{i}.mlp.c_fc.bias", None, "bias"),
    ("layers/down_proj", "transformer.h.{i}.mlp.c_proj.weight", None, "conv1d"),
    ("layers/down_bias", "transformer.h.{i}.mlp.c_proj.bias", None, "bias"),
    ("final_norm", "transformer.ln_f.weight", None, "layernorm"),
    ("final_norm_bias", "transformer.ln_f.bias", None, "bias"),
    ("lm_head", "lm_head.weight", None, "linear"),
)


def gpt2_config_from_hf(cfg: dict) -> ModelConfig:
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if cfg.get(flag):
            raise CheckpointError(f"config.json {flag}=true is not supported for gpt2")
    hidden, heads = int(required(cfg, "n_embd")), int(required(cfg, "n_head"))
    scale = None if cfg.get("scale_attn_weights", True) else 1.0
    return ModelConfig(
        model_type="gpt2",
        vocab_size=int(required(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(cfg.get("n_inner") or 4 * hidden),
        num_layers=int(required(cfg, "n_layer")),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
        max_position_embeddings=int(cfg.get("n_positions", 1024)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        **token_ids(cfg),
        hf_config_json=hf_json(cfg),
        arch=arch(
            norm="layer",
            positions="learned",
            qkv="fused",
            mlp="plain",
            act=activation(cfg, "activation_function", "gpt2"),
            qkv_bias=True,
            out_bias=True,
            mlp_bias=True,
            attn_scale=scale,
        ),
    )


def gpt2_config_to_hf(c: ModelConfig) -> dict:
    return common_to_hf(
        c,
        "GPT2LMHeadModel",
        n_embd=c.hidden_size,
        n_inner=c.intermediate_size,
        n_layer=c.num_layers,
        n_head=c.num_heads,
        layer_norm_epsilon=c.norm_eps,
        n_positions=c.max_position_embeddings,
        activation_function=c.arch.act,
    )


GPT2 = register(
    Family(
        name="gpt2",
        model_types=("gpt2",),
        module=DecoderForCausalLM,
        name_table=NAME_TABLE,
        config_from_hf=gpt2_config_from_hf,
        config_to_hf=gpt2_config_to_hf,
    )
)
