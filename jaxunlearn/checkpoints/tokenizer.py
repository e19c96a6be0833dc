"""Tokenizers from an HF directory (transformers' fast tokenizers, no torch) or from GGUF.

The GGUF path builds the byte-level BPE with the pre-tokenizer the file names, so SmolLM2's
digits are split one by one as in its original tokenizer.json (transformers' own GGUF
loader drops that split).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import CheckpointError

log = logging.getLogger(__name__)

# Llama-3's and Qwen2's pre-tokenization regexes (GPT-2's is built into ByteLevel).
LLAMA3_SPLIT = (  # regexes are long; the pieces are concatenated verbatim
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SUPPORTED_GGUF_PRE = ("smollm", "gpt2", "default", "llama-bpe", "qwen2")


# tokenizer_config.json classes that are the plain tokenizers-library backend: loaded by that
# class directly, as AutoTokenizer would, without AutoTokenizer's import of transformers'
# model configurations, which imports torch (2.5 s of every CLI start on a 2-core CPU).
PLAIN_FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_hf_tokenizer(directory: Path):
    directory = Path(directory)
    try:
        if _tokenizer_class(directory) in PLAIN_FAST_CLASSES and (directory / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(directory))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as e:
        raise CheckpointError(f"cannot load the tokenizer in {directory}: {e}") from None


def _tokenizer_class(directory: Path) -> str | None:
    try:
        return json.loads((directory / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None  # AutoTokenizer decides, and explains what is missing


def _pre_tokenizer(kind: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if kind == "smollm":
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    if kind in ("gpt2", "default"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    split = {"llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}[kind]
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])


def tokenizer_from_gguf(reader, path: Path):
    """A transformers PreTrainedTokenizerFast built from the GGUF tokenizer metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from .gguf_io import field

    model = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if model != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer model {model!r} in {path} is not supported (only byte-level BPE, 'gpt2'); "
            "pass an HF tokenizer directory with tokenizer=... instead"
        )
    if pre not in SUPPORTED_GGUF_PRE:
        raise CheckpointError(
            f"GGUF pre-tokenizer {pre!r} in {path} is not supported; supported: {', '.join(SUPPORTED_GGUF_PRE)}"
        )
    tokens = list(field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    types = list(field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types) if kind == 3]  # 3 = CONTROL in llama.cpp
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])

    def token(key):
        idx = field(reader, f"tokenizer.ggml.{key}_token_id")
        return tokens[int(idx)] if idx is not None else None

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=token("bos"),
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding"),
        chat_template=field(reader, "tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )
    wrapped.add_bos_token = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
    return wrapped
