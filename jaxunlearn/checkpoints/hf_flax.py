"""`flax_model.msgpack` in the layout transformers 4.x used for its Flax models.

Paths follow the PyTorch names with '/' for '.', and the leaf named by kind: linear
layers store `kernel` [in, out], embeddings `embedding`, RMSNorm scales and biases keep
`weight` / `bias` (e.g. `model/layers/0/self_attn/q_proj/kernel`). Reading uses msgpack
only; nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import serialization

from ..errors import CheckpointError

FILENAME = "flax_model.msgpack"
_LEAF = {
    "linear": "kernel",
    "conv1d": "kernel",
    "embedding": "embedding",
    "norm": "weight",
    "layernorm": "scale",
    "bias": "bias",
}
# Flax kernels are the transpose of the PyTorch weight for nn.Linear and Conv1D alike.
_TRANSPOSED = ("linear", "conv1d")


def flax_path(hf_name: str, kind: str) -> tuple[str, ...]:
    parts = hf_name.split(".")
    return tuple(parts[:-1]) + (_LEAF[kind],)


def _flatten(tree: dict, prefix=()) -> dict[tuple[str, ...], np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


class FlaxMsgpackSource:
    """Tensors of a flax_model.msgpack presented under HF names in HF layout."""

    def __init__(self, path: Path, name_table):
        self.description = str(path)
        try:
            tree = serialization.msgpack_restore(path.read_bytes())
        except Exception as e:
            raise CheckpointError(f"cannot read {path}: {e}. The file is truncated or not a Flax msgpack") from None
        if "params" in tree and isinstance(tree["params"], dict):
            tree = tree["params"]
        # A base-model checkpoint (FlaxLlamaModel) has no "model" prefix.
        if "model" not in tree and "embed_tokens" in tree:
            tree = {"model": tree}
        flat = _flatten(tree)
        self._tensors: dict[str, tuple[np.ndarray, str]] = {}
        for _path, hf, _gguf, kind in name_table:
            for key, array in flat.items():
                name = _match(hf, kind, key)
                if name is not None:
                    self._tensors[name] = (array, kind)
        known = {flax_path(n, k) for n, (_, k) in self._tensors.items()}
        self._unknown = ["/".join(k) for k in flat if k not in known]

    def names(self) -> set[str]:
        return set(self._tensors) | set(self._unknown)

    def get(self, name: str) -> np.ndarray:
        array, kind = self._tensors[name]
        array = np.asarray(array)
        return np.ascontiguousarray(array.T) if kind in _TRANSPOSED else array


def _match(hf_pattern: str, kind: str, key: tuple[str, ...]) -> str | None:
    """The HF name if the flax key is an instance of the pattern (layer index filled in)."""
    pattern = flax_path(hf_pattern, kind)
    if len(pattern) != len(key):
        return None
    index = None
    for p, k in zip(pattern, key):
        if p == "{i}":
            if not k.isdigit():
                return None
            index = int(k)
        elif p != k:
            return None
    return hf_pattern.format(i=index) if index is not None else hf_pattern


def write_flax_msgpack(tensors, kinds: dict[str, str], path: Path) -> None:
    """tensors: (HF name, HF-layout array) pairs; kinds: HF name -> kind."""
    tree: dict = {}
    for name, array in tensors:
        kind = kinds[name]
        node = tree
        *parents, leaf = flax_path(name, kind)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.ascontiguousarray(array.T) if kind in _TRANSPOSED else array
    path.write_bytes(serialization.msgpack_serialize(tree))
