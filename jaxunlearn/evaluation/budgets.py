"""How many new tokens each evaluation answer may have: the generation budget conventions.

Prompts are left-padded to a shape bucket for decoding; that padding never counts against
a budget. The conventions differ in how a budget is derived from the real prompt:

- "tofu": TOFU's evaluate_util (and the Closer Look code) calls HF `generate` with
  `max_length=200` on batches of 30 rows in dataset order, left-padded to the batch's
  longest prompt, so every row of a batch may have `max_length - longest real prompt of
  its batch` new tokens (the batch size is `eval.tofu_batch_size`).
- "open_unlearning": `max_new_tokens` new tokens for every row (open-unlearning: 200).
- "per_row": `max_length - the row's own prompt` (TOFU's intent without the batch quirk).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

# what each convention gives an answer, and the eval settings it reads for that
GIVES = {
    "tofu": "eval.max_length minus the longest prompt of its eval.tofu_batch_size rows",
    "open_unlearning": "eval.max_new_tokens",
    "per_row": "eval.max_length minus its own prompt",
}
BUDGETS = tuple(GIVES)
# the first convention that reads a setting is the one a warning suggests: per_row, the
# default, for eval.max_length (not tofu and its batch quirk)
READS = {"per_row": ("max_length",), "open_unlearning": ("max_new_tokens",), "tofu": ("max_length", "tofu_batch_size")}


def unread_budget_settings(e) -> list[str]:
    """A warning per eval setting (of EvalSection `e`) moved from its default that the
    chosen generation_budget does not read: eval.max_new_tokens=8 under per_row generated up
    to max_length minus the prompt without a word."""
    default = type(e)()
    read = READS[e.generation_budget]
    return [
        f"eval.{key}={getattr(e, key)} is not used: eval.generation_budget={e.generation_budget} gives each "
        f"answer {GIVES[e.generation_budget]} new tokens; set eval.generation_budget="
        f"{next(b for b, keys in READS.items() if key in keys)} for eval.{key} to apply"
        for key in dict.fromkeys(k for keys in READS.values() for k in keys)
        if key not in read and getattr(e, key) != getattr(default, key)
    ]


_logged: set[str] = set()


def warn_unread_budget_settings(e) -> list[str]:
    """`unread_budget_settings(e)`, each logged as a warning the first time this process
    meets it: the CLI warns before a run starts (hours before an unlearning run evaluates),
    `evaluate_model` warns a Python caller, and neither repeats the other."""
    texts = unread_budget_settings(e)
    for text in texts:
        if text not in _logged:
            _logged.add(text)
            log.warning(text)
    return texts


def generation_budgets(
    prompt_lengths, convention: str, max_length: int = 200, max_new_tokens: int = 200, tofu_batch_size: int = 30
) -> np.ndarray:
    """New-token budget per row (int64 [N], never negative)."""
    lengths = np.asarray(prompt_lengths, np.int64)
    if convention == "tofu":
        longest = (
            np.concatenate(
                [
                    np.full(len(chunk), chunk.max())
                    for chunk in np.split(lengths, range(tofu_batch_size, len(lengths), tofu_batch_size))
                ]
            )
            if len(lengths)
            else lengths
        )
        budgets = max_length - longest
    elif convention == "open_unlearning":
        budgets = np.full(len(lengths), max_new_tokens, np.int64)
    elif convention == "per_row":
        budgets = max_length - lengths
    else:
        raise ConfigError(f"eval.generation_budget={convention!r} is not one of {', '.join(BUDGETS)}")
    return np.maximum(budgets, 0)
