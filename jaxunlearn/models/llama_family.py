"""The Llama-shaped families (llama, mistral, qwen2): the configurable decoder with its
defaults (RMSNorm, rotary positions, separate q/k/v, SwiGLU), their name table and
config.json translation."""

from __future__ import annotations

from ..errors import CheckpointError
from .config import Architecture, ModelConfig
from .decoder import DecoderForCausalLM
from .layers import SUPPORTED_ROPE_TYPES
from .registry import Family, hf_json, register, required

# (jaxunlearn parameter path, HF safetensors name, GGUF name, kind). "{i}" is a layer index
# for parameters stacked on the `layers` axis. The kind fixes the layout conversion:
# "linear" is stored [out, in] by HF and [in, out] here (and in HF-Flax, as `kernel`).
NAME_TABLE = (
    ("embed", "model.embed_tokens.weight", "token_embd.weight", "embedding"),
    ("layers/attn_norm", "model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight", "norm"),
    ("layers/q_proj", "model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight", "linear"),
    ("layers/q_bias", "model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias", "bias"),
    ("layers/k_proj", "model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight", "linear"),
    ("layers/k_bias", "model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias", "bias"),
    ("layers/v_proj", "model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight", "linear"),
    ("layers/v_bias", "model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias", "bias"),
    ("layers/o_proj", "model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight", "linear"),
    ("layers/o_bias", "model.layers.{i}.self_attn.o_proj.bias", "blk.{i}.attn_output.bias", "bias"),
    ("layers/mlp_norm", "model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight", "norm"),
    ("layers/gate_proj", "model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", "linear"),
    ("layers/gate_bias", "model.layers.{i}.mlp.gate_proj.bias", "blk.{i}.ffn_gate.bias", "bias"),
    ("layers/up_proj", "model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight", "linear"),
    ("layers/up_bias", "model.layers.{i}.mlp.up_proj.bias", "blk.{i}.ffn_up.bias", "bias"),
    ("layers/down_proj", "model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight", "linear"),
    ("layers/down_bias", "model.layers.{i}.mlp.down_proj.bias", "blk.{i}.ffn_down.bias", "bias"),
    ("final_norm", "model.norm.weight", "output_norm.weight", "norm"),
    ("lm_head", "lm_head.weight", "output.weight", "linear"),
)

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _rope(cfg: dict) -> tuple[float, tuple | None]:
    """Read RoPE settings from transformers 4.x (rope_theta, rope_scaling) or 5.x (rope_parameters)."""
    params = dict(cfg.get("rope_parameters") or {})
    theta = cfg.get("rope_theta", params.pop("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or params or None
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind not in SUPPORTED_ROPE_TYPES:
            raise CheckpointError(
                f"config.json rope type {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
            )
        scaling = None if kind == "default" else tuple(sorted(scaling.items()))
    return float(theta), scaling


def llama_config_from_hf(cfg: dict) -> ModelConfig:
    model_type = cfg.get("model_type", "llama")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"config.json hidden_act {act!r} is not supported for {model_type}; expected 'silu'")
    hidden = int(required(cfg, "hidden_size"))
    heads = int(required(cfg, "num_attention_heads"))
    theta, scaling = _rope(cfg)
    if model_type == "qwen2":
        if cfg.get("use_sliding_window"):
            raise CheckpointError("config.json use_sliding_window=true is not supported for qwen2")
        qkv_bias, out_bias, window = True, False, None
    else:
        qkv_bias = out_bias = bool(cfg.get("attention_bias", False))
        window = cfg.get("sliding_window") if model_type == "mistral" else None
    eos = cfg.get("eos_token_id")
    return ModelConfig(
        model_type=model_type,
        vocab_size=int(required(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(required(cfg, "intermediate_size")),
        num_layers=int(required(cfg, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        arch=Architecture(qkv_bias=qkv_bias, out_bias=out_bias, mlp_bias=bool(cfg.get("mlp_bias", False))),
        sliding_window=int(window) if window else None,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=cfg.get("pad_token_id"),
        hf_config_json=hf_json(cfg),
    )


def llama_config_to_hf(c: ModelConfig) -> dict:
    """The config.json to export: the original fields, with ours written over them."""
    cfg = c.hf_config
    cfg.update(
        model_type=c.model_type,
        architectures=[_ARCHITECTURES[c.model_type]],
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        hidden_act="silu",
        rms_norm_eps=c.norm_eps,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id,
        pad_token_id=c.pad_token_id,
        torch_dtype=c.param_dtype,  # transformers 4.x name
        dtype=c.param_dtype,  # transformers 5.x name
    )
    cfg.pop("rope_parameters", None)
    cfg["rope_theta"] = c.rope_theta
    cfg["rope_scaling"] = c.rope_scaling_dict
    if c.model_type != "qwen2":
        cfg["attention_bias"] = c.arch.qkv_bias
        cfg["mlp_bias"] = c.arch.mlp_bias
    if c.model_type == "mistral":
        cfg["sliding_window"] = c.sliding_window
    return cfg


LLAMA = register(
    Family(
        name="llama",
        model_types=("llama", "mistral", "qwen2"),
        module=DecoderForCausalLM,
        name_table=NAME_TABLE,
        config_from_hf=llama_config_from_hf,
        config_to_hf=llama_config_to_hf,
        gguf_rope_permuted=(("layers/q_proj", "num_heads"), ("layers/k_proj", "num_kv_heads")),
    )
)
