"""GGUF (llama.cpp) checkpoints in: config from metadata, tensors dequantized to HF layout.

llama.cpp stores Q and K rows permuted for interleaved RoPE; they are un-permuted per head
here so that the rotate-half RoPE of the model applies (transformers' GGUF loader does the
same).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..models.config import ModelConfig
from ..models.registry import family_for
from .gguf_file import GGUFFile

SUPPORTED_ARCHITECTURES = ("llama",)


def open_gguf(path: Path) -> GGUFFile:
    try:
        return GGUFFile(path)
    except Exception as e:
        raise CheckpointError(f"cannot read GGUF file {path}: {e}. It is truncated or not a GGUF file") from None


def field(reader: GGUFFile, key: str, default=None):
    return reader.fields.get(key, default)


def config_from_gguf(reader, path: Path) -> ModelConfig:
    arch = field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"GGUF architecture {arch!r} in {path} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )

    def need(key):
        value = field(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"GGUF file {path} lacks the metadata field {arch}.{key!s}")
        return value

    names = {t.name for t in reader.tensors}
    heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    vocab = field(reader, f"{arch}.vocab_size") or len(field(reader, "tokenizer.ggml.tokens", []))
    scaling_type = field(reader, f"{arch}.rope.scaling.type")
    if scaling_type not in (None, "none"):
        raise CheckpointError(f"GGUF rope scaling {scaling_type!r} in {path} is not supported")
    hf = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(field(reader, f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(field(reader, f"{arch}.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(field(reader, f"{arch}.context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id"),
    }
    hf = json.loads(json.dumps(hf, default=int))  # numpy scalars -> plain JSON
    return family_for("llama").config_from_hf(hf)


def unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaved-RoPE row permutation of a [heads*head_dim, in] matrix."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


class GGUFSource:
    """GGUF tensors under HF names, dequantized to fp32, in HF layout."""

    def __init__(self, reader, config: ModelConfig, path: Path):
        from gguf import GGMLQuantizationType  # noqa: F401  (import check)

        family = family_for(config.model_type)
        self.description = str(path)
        self._tensors = {t.name: t for t in reader.tensors}
        self._hf_to_gguf: dict[str, str] = {}
        for _path, hf, gguf_name, _kind in family.name_table:
            for i in range(config.num_layers) if "{i}" in hf else [None]:
                g = gguf_name.format(i=i)
                if g in self._tensors:
                    self._hf_to_gguf[hf.format(i=i)] = g
        heads_of = dict(family.gguf_rope_permuted)
        self._permuted = {}
        for _path, hf, gguf_name, _kind in family.name_table:
            if _path in heads_of:
                self._permuted[gguf_name.split(".")[-2]] = getattr(config, heads_of[_path])

    def names(self) -> set[str]:
        return set(self._hf_to_gguf)

    def get(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        tensor = self._tensors[self._hf_to_gguf[name]]
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # GGUF lists dims innermost first; the numpy data is already [out, in].
        array = array.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        kind = self._hf_to_gguf[name].split(".")[-2]
        if kind in self._permuted and array.ndim == 2:
            array = unpermute_rope_rows(array, self._permuted[kind])
        return array
