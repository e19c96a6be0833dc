"""Pickled `pytorch_model.bin` weights: only on explicit opt-in, and with weights_only=True."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
from .convert import DictSource
from .sources import TORCH_BIN, TORCH_BIN_INDEX


class PickleRefused(CheckpointError):
    """Pickled weights met without the opt-in; `naming(setting)` words the fix for a command."""

    def __init__(self, path: Path, opt_in: str = "allow_pickle=True (CLI: --allow-pickle)"):
        self.path = path
        super().__init__(
            f"{path} holds pickled PyTorch weights ({TORCH_BIN}); unpickling can run code, so it is refused by "
            f"default. Convert it to safetensors, or opt in with {opt_in}, which loads it with "
            "torch.load(weights_only=True)"
        )

    def naming(self, opt_in: str) -> PickleRefused:
        return PickleRefused(self.path, opt_in)


def refuse(path: Path) -> PickleRefused:
    return PickleRefused(path)


def load_torch_bin(directory: Path) -> DictSource:
    try:
        import torch
    except ImportError:
        raise CheckpointError("loading pytorch_model.bin needs torch: pip install torch") from None
    index = directory / TORCH_BIN_INDEX
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [TORCH_BIN]
    tensors = {}
    for fname in files:
        try:
            state = torch.load(directory / fname, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot load {directory / fname} with weights_only=True: {e}") from None
        for name, t in state.items():
            if t.dtype == torch.bfloat16:
                import ml_dtypes

                tensors[name] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            else:
                tensors[name] = t.numpy()
    return DictSource(tensors, description=str(directory / files[0]))
