"""Read and write safetensors checkpoints (single file or sharded with an index), numpy only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from ..errors import CheckpointError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class SafetensorsSource:
    """Lazy tensor access over `model.safetensors` or the shards named by its index."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / INDEX
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index} is not a valid safetensors index ({e}); re-download or re-export it")
            self.file_of = {name: self.directory / f for name, f in weight_map.items()}
        elif (self.directory / SINGLE).exists():
            self.file_of = None
        else:
            raise CheckpointError(f"no {SINGLE} or {INDEX} in {self.directory}")
        self.description = str(index if self.file_of is not None else self.directory / SINGLE)
        self._handles: dict[Path, object] = {}
        if self.file_of is None:
            self._names = set(self._open(self.directory / SINGLE).keys())
        else:
            self._names = set(self.file_of)

    def _open(self, path: Path):
        if path not in self._handles:
            if not path.exists():
                raise CheckpointError(f"safetensors shard {path} is missing; re-download the checkpoint")
            try:
                self._handles[path] = safe_open(str(path), framework="numpy")
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise CheckpointError(
                    f"cannot read {path}: {e}. The file is truncated or corrupt; re-download or re-export it"
                ) from None
        return self._handles[path]

    def names(self) -> set[str]:
        return self._names

    def get(self, name: str) -> np.ndarray:
        path = self.directory / SINGLE if self.file_of is None else self.file_of[name]
        try:
            return self._open(path).get_tensor(name)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"cannot read tensor {name!r} from {path}: {e}. The file is truncated or corrupt"
            ) from None


def write_safetensors(tensors: Iterable[tuple[str, np.ndarray]], directory: Path, max_shard_bytes: int) -> None:
    """Write one file, or shards plus `model.safetensors.index.json` past `max_shard_bytes`.

    `tensors` is consumed lazily and at most one shard is held in memory: each shard is
    written (under a provisional name) as soon as the next tensor would overflow it, and
    the files get their final `-of-N` names once N is known."""
    metadata = {"format": "pt"}  # transformers expects this marker
    written: list[tuple[Path, list[str]]] = []
    weight_sizes: dict[str, int] = {}
    shard: dict[str, np.ndarray] = {}
    size = 0

    def flush():
        path = directory / f".shard-{len(written) + 1:05d}.safetensors"
        save_file(shard, str(path), metadata=metadata)
        written.append((path, list(shard)))

    for name, array in tensors:
        if shard and size + array.nbytes > max_shard_bytes:
            flush()
            shard, size = {}, 0
        shard[name] = np.ascontiguousarray(array)
        size += array.nbytes
        weight_sizes[name] = array.nbytes
    if shard or not written:
        flush()
    if len(written) == 1:
        os.rename(written[0][0], directory / SINGLE)
        return
    weight_map = {}
    for k, (path, names) in enumerate(written, start=1):
        fname = f"model-{k:05d}-of-{len(written):05d}.safetensors"
        os.rename(path, directory / fname)
        weight_map.update({name: fname for name in names})
    index = {"metadata": {"total_size": sum(weight_sizes.values())}, "weight_map": weight_map}
    (directory / INDEX).write_text(json.dumps(index, indent=2) + os.linesep)
