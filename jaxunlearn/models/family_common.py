"""config.json helpers shared by the families built on `decoder.py`."""

from __future__ import annotations

from ..errors import CheckpointError
from .config import Architecture, ModelConfig
from .layers import ACTIVATIONS


def activation(cfg: dict, key: str, model_type: str) -> str:
    act = cfg.get(key)
    if act not in ACTIVATIONS:
        raise CheckpointError(
            f"config.json {key}={act!r} is not supported for {model_type}; supported: {', '.join(ACTIVATIONS)}"
        )
    return act


def rope_settings(
    cfg: dict, theta_key: str = "rope_theta", partial_key: str = "partial_rotary_factor", default_partial: float = 1.0
) -> tuple[float, float]:
    """(theta, partial rotary factor) from transformers 4.x top-level fields or 5.x rope_parameters."""
    params = cfg.get("rope_parameters") or {}
    kind = params.get("rope_type", "default")
    if kind != "default" or (cfg.get("rope_scaling") or {}):
        raise CheckpointError(f"config.json rope scaling {kind!r} is not supported for {cfg.get('model_type')}")
    theta = cfg.get(theta_key, params.get("rope_theta", 10000.0))
    partial = cfg.get(partial_key, params.get("partial_rotary_factor", default_partial))
    return float(theta), float(partial)


def arch(**switches) -> Architecture:
    """The decoder's switches; None leaves a switch at its default."""
    return Architecture(**{k: v for k, v in switches.items() if v is not None})


def common_to_hf(c: ModelConfig, architecture: str, **fields) -> dict:
    """The original config.json with the fields a run can change written over it."""
    cfg = c.hf_config
    cfg.update(
        model_type=c.model_type,
        architectures=[architecture],
        vocab_size=c.vocab_size,
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id,
        pad_token_id=c.pad_token_id,
        torch_dtype=c.param_dtype,
        dtype=c.param_dtype,
        **fields,
    )
    return cfg


def token_ids(cfg: dict) -> dict:
    eos = cfg.get("eos_token_id")
    return dict(
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=cfg.get("pad_token_id"),
    )
