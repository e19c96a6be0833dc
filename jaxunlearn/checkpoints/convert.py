"""Tensors in HF layout <-> jaxunlearn models, driven by each family's name table.

Every checkpoint reader (safetensors, HF-Flax msgpack, GGUF, opt-in torch .bin) presents
its tensors under HF names in HF layout; this module is the single place that maps them
onto the model's stacked parameters and back.
"""

from __future__ import annotations

import logging
from typing import Iterator, Protocol

import jax
import numpy as np
from flax import nnx

from ..errors import CheckpointError
from ..models.config import ModelConfig, to_dtype
from ..models.registry import family_for
from ..parallel import logical_sharding
from .host_copy import host_array

log = logging.getLogger(__name__)

# Tensors some checkpoints carry that no model needs.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class TensorSource(Protocol):
    """A checkpoint's tensors under HF names, in HF layout (linear weights [out, in])."""

    description: str

    def names(self) -> set[str]: ...

    def get(self, name: str) -> np.ndarray: ...


def to_hf_layout(array: np.ndarray, kind: str) -> np.ndarray:
    """HF stores nn.Linear weights [out, in]; ours are [in, out]. GPT-2's Conv1D weights
    (kind conv1d) are [in, out] in both, like every other kind."""
    return np.ascontiguousarray(array.T) if kind == "linear" else array


from_hf_layout = to_hf_layout  # a transpose is its own inverse


def _rows(config: ModelConfig):
    """(path, hf name pattern, kind) for every parameter the config's model has."""
    family = family_for(config.model_type)
    return [(path, hf, kind) for path, hf, _gguf, kind in family.name_table]


def _abstract_state(config: ModelConfig):
    family = family_for(config.model_type)
    abstract = nnx.eval_shape(lambda: family.module(config, rngs=nnx.Rngs(0)))
    return nnx.split(abstract)


def _read_param(source: TensorSource, hf: str, kind: str, shape: tuple, layered: bool, dtype) -> np.ndarray:
    names = [hf.format(i=i) for i in range(shape[0])] if layered else [hf]
    per_shape = shape[1:] if layered else shape
    parts = []
    for name in names:
        if name not in source.names():
            raise CheckpointError(
                f"tensor {name!r} is missing from {source.description}; the checkpoint does not match its config.json"
            )
        array = from_hf_layout(source.get(name), kind)
        if tuple(array.shape) != tuple(per_shape):
            want = to_hf_layout(np.empty(per_shape, np.int8), kind).shape
            raise CheckpointError(
                f"tensor {name!r} in {source.description} has shape {tuple(source.get(name).shape)}, "
                f"but config.json implies {tuple(want)}"
            )
        parts.append(np.asarray(array).astype(dtype, copy=False))
    return np.stack(parts) if layered else parts[0]


def load_model(config: ModelConfig, source: TensorSource, mesh=None, rules=None) -> nnx.Module:
    """Build the config's model with every parameter read from `source`.

    With a mesh, each parameter is created directly with its NamedSharding: every device
    receives only its slice (`jax.make_array_from_callback`), so no full copy is ever
    placed on one device.
    """
    graphdef, state = _abstract_state(config)
    table = {path: (hf, kind) for path, hf, kind in _rows(config)}
    dtype = np.dtype(to_dtype(config.param_dtype))
    used: set[str] = set()
    values = {}
    for path, variable in nnx.to_flat_state(state):
        key = "/".join(str(p) for p in path)
        if key not in table:
            # a family's name table misses one of its module's parameters: a bug, not bad input
            raise RuntimeError(f"parameter {key!r} has no entry in the {config.model_type} name table")
        hf, kind = table[key]
        shape = tuple(variable.get_value().shape)
        layered = "{i}" in hf
        array = _read_param(source, hf, kind, shape, layered, dtype)
        used.update(hf.format(i=i) for i in range(shape[0] if layered else 1))
        if mesh is not None:
            sharding = logical_sharding(variable.get_metadata()["logical_axes"], shape, mesh, rules)
            values[path] = jax.make_array_from_callback(shape, sharding, lambda idx, a=array: a[idx])
        else:
            values[path] = jax.device_put(array)
    extra = sorted(n for n in source.names() - used if not n.endswith(IGNORED_SUFFIXES))
    if extra:
        log.warning("ignoring %d tensors of %s not used by the model: %s", len(extra), source.description, extra[:5])
    nnx.replace_by_pure_dict(state, nnx.to_pure_dict(nnx.from_flat_state(values)))
    return nnx.merge(graphdef, state)


def iter_hf_tensors(model: nnx.Module) -> Iterator[tuple[str, np.ndarray, str]]:
    """(HF name, array in HF layout, kind) for every parameter of the model, layers unstacked,
    each fetched to the host only when it is reached (a collective with several processes:
    checkpoints.host_copy)."""
    config: ModelConfig = model.config
    table = {path: (hf, kind) for path, hf, kind in _rows(config)}
    _, state = nnx.split(model)
    for path, variable in nnx.to_flat_state(state):
        hf, kind = table["/".join(str(p) for p in path)]
        value = variable.get_value()
        if "{i}" in hf:  # one layer on the host at a time
            for i in range(value.shape[0]):
                yield hf.format(i=i), to_hf_layout(host_array(value[i]), kind), kind
        else:
            yield hf, to_hf_layout(host_array(value), kind), kind


class DictSource:
    """A TensorSource over an in-memory {name: array} dict (tests, torch state dicts)."""

    def __init__(self, tensors: dict[str, np.ndarray], description: str = "the given tensors"):
        self.tensors = tensors
        self.description = description

    def names(self) -> set[str]:
        return set(self.tensors)

    def get(self, name: str) -> np.ndarray:
        return self.tensors[name]
