"""Raw-text (corpus) unlearning data: MUSE's and WMDP's forget/retain corpora cut into
fixed token windows, and text rows scored or continued after a prefix.

Two ways to cut a corpus into windows:

- "open_unlearning" (its PretrainingDataset, which MUSE and WMDP runs use): the documents
  joined by blank lines, tokenized once without special tokens, cut every `window` tokens,
  each window decoded back to text and tokenized again with the tokenizer's special tokens
  (BOS where it has one), the first token never supervised. A last empty window (the
  corpus a multiple of the window long) is dropped: it has nothing to predict.
- "documents": each document on its own, windows of its own tokens (no decode round trip,
  no window spanning two documents).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import DataError
from .batching import draw_pairing
from .tokenize import IGNORE, TokenizedRows, encode_text_windows

log = logging.getLogger(__name__)

CHUNKINGS = ("open_unlearning", "documents")
CORPUS_STREAMS = ("forget", "retain")  # a corpus has no questions, answers or refusals


def encode_prefixed_text(
    tokenizer, prefix: str, text: str, max_length: int, insert_space: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids, labels, prefix length) as open-unlearning's preprocess_pretraining_instance:
    prefix + text tokenized with special tokens, cut at prefix length + max_length, the
    prefix tokens (at least the first token) not supervised."""
    full = tokenizer(prefix + (" " if insert_space else "") + text, add_special_tokens=True)["input_ids"]
    n_prefix = len(tokenizer(prefix, add_special_tokens=True)["input_ids"])
    full = np.asarray(full[: n_prefix + max_length], np.int32)
    labels = full.copy()
    labels[: max(n_prefix, 1)] = IGNORE
    return full, labels, n_prefix


def open_unlearning_chunks(tokenizer, texts: list[str], window: int) -> list[str]:
    """The corpus as open-unlearning cuts it: joined by blank lines, `window`-token pieces,
    each decoded back to text (the last empty piece dropped)."""
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    pieces = [ids[i * window : (i + 1) * window] for i in range(len(ids) // window + 1)]
    return [tokenizer.decode(p) for p in pieces if p]


def encode_corpus(tokenizer, texts: list[str], window: int, chunking: str = "open_unlearning", what: str = "corpus"):
    """Training windows of a corpus (see the module docstring)."""
    if chunking not in CHUNKINGS:
        raise DataError(f"unknown data.chunking {chunking!r}; use one of {', '.join(CHUNKINGS)}")
    documents = [t for t in texts if t and t.strip()]
    if not documents:
        raise DataError(f"the {what} is empty: no document has any text")
    if chunking == "documents":
        return encode_text_windows(tokenizer, documents, window, what=what)
    rows = TokenizedRows([], [])
    for chunk in open_unlearning_chunks(tokenizer, list(texts), window):  # empty documents joined too, as there
        ids, labels, _ = encode_prefixed_text(tokenizer, "", chunk, window)
        if (labels != IGNORE).any():
            rows.ids.append(ids)
            rows.labels.append(labels)
    if not rows.ids:
        raise DataError(f"the {what} has fewer than 2 tokens: nothing to train on")
    return rows


def build_corpus_streams(
    tokenizer,
    forget_texts: list[str],
    retain_texts: list[str] | None,
    streams: tuple[str, ...],
    window: int,
    seed: int,
    chunking: str = "open_unlearning",
    objective: str = "the objective",
) -> dict[str, TokenizedRows]:
    """Forget windows, each paired with a retain window (the seeded pairing rule of QA data)."""
    other = [s for s in streams if s not in CORPUS_STREAMS]
    if other:
        raise DataError(
            f"{objective} reads the stream(s) {', '.join(other)} (questions with answers or refusals), which a "
            f"text corpus cannot give; on a corpus use an objective that reads only forget and retain text "
            "(GA, GD, KL, NPO, SimNPO, RMU, ME, ...)"
        )
    forget = encode_corpus(tokenizer, forget_texts, window, chunking, "forget corpus")
    out = {"forget": forget} if "forget" in streams else {}
    if "retain" in streams:
        if not retain_texts:
            raise DataError(f"{objective} needs a retain corpus, but none was given (data.retain_file / split)")
        retain = encode_corpus(tokenizer, retain_texts, window, chunking, "retain corpus")
        pairing = draw_pairing(len(forget), len(retain), 0, seed)
        out["retain"] = retain.take(pairing.retain_index)
    log.info("corpus: %d forget windows of up to %d tokens", len(forget), window)
    return out
