"""Read and write safetensors checkpoints (single file or sharded with an index), numpy only."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def write_safetensors(tensors: list[tuple[str, np.ndarray]], directory: Path, max_shard_bytes: int) -> None:
    """Write one file, or shards plus `model.safetensors.index.json` past `max_shard_bytes`."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in tensors:
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = np.ascontiguousarray(array)
        size += array.nbytes
    metadata = {"format": "pt"}  # transformers expects this marker
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE), metadata=metadata)
        return
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, start=1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata=metadata)
        for name, array in shard.items():
            weight_map[name] = fname
            total += array.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX).write_text(json.dumps(index, indent=2) + os.linesep)
