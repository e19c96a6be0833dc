"""Model families keyed by Hugging Face `model_type`.

A family is a module class, its checkpoint name table (data) and the translation between
`config.json` and `ModelConfig`. New families (Phi, GPT-2, GPT-NeoX, Gemma) register here
and need nothing else from training or evaluation code.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable

from flax import nnx

from ..errors import CheckpointError
from .config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    module: type
    name_table: tuple
    config_from_hf: Callable[[dict], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    # (parameter path, GGUF name) pairs whose rows llama.cpp permuted for interleaved RoPE,
    # with the config attribute giving the head count to undo it.
    gguf_rope_permuted: tuple = ()


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    for model_type in family.model_types:
        _REGISTRY[model_type] = family
    return family


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def family_for(model_type: str | None) -> Family:
    if model_type not in _REGISTRY:
        raise CheckpointError(f"unsupported model_type {model_type!r}; supported: {', '.join(supported_model_types())}")
    return _REGISTRY[model_type]


def create_model(config: ModelConfig, seed: int = 0) -> nnx.Module:
    """A randomly initialised model of the config's family (for tests and from-scratch runs)."""
    return family_for(config.model_type).module(config, rngs=nnx.Rngs(seed))


def required(cfg: dict, key: str, where: str = "config.json"):
    if key not in cfg or cfg[key] is None:
        raise CheckpointError(f"{where} lacks the required field {key!r}")
    return cfg[key]


def hf_json(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def num_parameters(config: ModelConfig) -> int:
    """Parameters of a config's model, counted on abstract shapes (nothing allocated)."""
    import jax

    abstract = nnx.eval_shape(lambda: family_for(config.model_type).module(config, rngs=nnx.Rngs(0)))
    return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
