"""Pickled `pytorch_model.bin` weights: only on explicit opt-in, and with weights_only=True."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
from .convert import DictSource
from .sources import TORCH_BIN, TORCH_BIN_INDEX


def refuse(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} holds pickled PyTorch weights ({TORCH_BIN}); unpickling can run code, so it is refused by "
        "default. Convert it to safetensors, or opt in with allow_pickle=True (CLI: --allow-pickle), which "
        "loads it with torch.load(weights_only=True)"
    )


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
