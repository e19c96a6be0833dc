"""Tokenize QA pairs and text windows into (input_ids, labels) rows.

Labels follow SPEC section 1 and TOFU's code: the prompt is tokenized on its own (with the
tokenizer's special tokens, so BOS counts) and that many leading tokens of the jointly
tokenized prompt+answer are ignored (-100); the answer tokens and one final EOS are
supervised. When the answer already ends in EOS (ChatML's `<|im_end|>`) no second one is
added. Truncation at `max_length` is counted and reported, never silent.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..errors import DataError

IGNORE = -100
log = logging.getLogger(__name__)


@dataclasses.dataclass
class TokenizedRows:
    """Variable-length rows: ids[i] and labels[i] are int32 arrays of equal length."""

    ids: list[np.ndarray]
    labels: list[np.ndarray]
    truncated: int = 0  # rows cut at max_length
    emptied: int = 0  # rows with no supervised token left after truncation

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], np.int32)

    def take(self, index) -> "TokenizedRows":
        return TokenizedRows([self.ids[i] for i in index], [self.labels[i] for i in index])


def pad_token_id(tokenizer) -> int:
    """The pad id; tokenizers without one pad with EOS (as TOFU and the paper do), and say so."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    log.warning("tokenizer has no pad token: padding with EOS (id %d)", tokenizer.eos_token_id)
    return int(tokenizer.eos_token_id)


def encode_qa(
    tokenizer, template, questions: list[str], answers: list[str], max_length: int, what: str = "rows"
) -> TokenizedRows:
    """Tokenize (question, answer) pairs with the batch API; see the module docstring."""
    if len(questions) != len(answers):
        raise DataError(f"{what}: {len(questions)} questions but {len(answers)} answers")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token; answers cannot be terminated")
    pairs = [template.format(q, a) for q, a in zip(questions, answers)]
    prompts = [p for p, _ in pairs]
    full = [p + a for p, a in pairs]
    prompt_lens = [len(x) for x in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    full_ids = tokenizer(full, add_special_tokens=True)["input_ids"]
    rows = TokenizedRows([], [])
    for n_prompt, ids in zip(prompt_lens, full_ids):
        if not ids or ids[-1] != eos:
            ids = ids + [eos]
        if len(ids) > max_length:
            ids = ids[:max_length]
            rows.truncated += 1
        ids = np.asarray(ids, np.int32)
        labels = ids.copy()
        labels[:n_prompt] = IGNORE
        if (labels != IGNORE).sum() == 0:
            rows.emptied += 1
        rows.ids.append(ids)
        rows.labels.append(labels)
    _report(rows, what, max_length)
    return rows


def encode_text_windows(
    tokenizer, texts: list[str], window: int, min_tokens: int = 2, what: str = "documents"
) -> TokenizedRows:
    """Cut each document into consecutive windows of `window` tokens, every token supervised.

    A trailing window shorter than `min_tokens` is dropped (it has nothing to predict).
    """
    rows = TokenizedRows([], [])
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids), window):
            chunk = np.asarray(ids[start : start + window], np.int32)
            if len(chunk) >= min_tokens:
                rows.ids.append(chunk)
                rows.labels.append(chunk.copy())
    if not rows.ids:
        raise DataError(f"{what}: no document has {min_tokens} or more tokens; nothing to train on")
    return rows


def _report(rows: TokenizedRows, what: str, max_length: int) -> None:
    if rows.truncated:
        log.warning("%s: %d of %d rows truncated at max_length=%d", what, rows.truncated, len(rows), max_length)
    if len(rows) and rows.emptied == len(rows):
        raise DataError(
            f"{what}: every row was truncated to nothing (the prompt fills max_length={max_length}); raise max_length"
        )
    if rows.emptied:
        log.warning("%s: %d rows have no answer token left after truncation", what, rows.emptied)
