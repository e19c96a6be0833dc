"""Evaluation inputs: scored candidates per example, and left-padded generation prompts.

Per example: the answer (`gt`), the base answer for the truth ratio (`para`: the
paraphrased answer on forget/retain sets, the answer itself on real authors / world facts)
and every perturbed answer, each tokenized as a separate (prompt, candidate) row so one
log-prob kernel scores them all.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..errors import DataError
from .tokenize import TokenizedRows, encode_qa

log = logging.getLogger(__name__)

GT, PARA, PERTURBED = 0, 1, 2


@dataclasses.dataclass
class EvalSet:
    name: str
    rows: list[dict]
    candidates: TokenizedRows  # flattened over examples and candidates
    example: np.ndarray  # [M] example index of each candidate row
    kind: np.ndarray  # [M] GT, PARA or PERTURBED
    slot: np.ndarray  # [M] index among the perturbed answers (0 for GT/PARA)
    num_perturbed: int  # per example (0: truth ratio unavailable)
    prompts: list[np.ndarray]  # prompt ids per example, for generation
    references: list[str]  # answers to compare generations against

    def __len__(self) -> int:
        return len(self.rows)


def build_eval_set(
    tokenizer,
    template,
    rows: list[dict],
    name: str,
    max_length: int,
    num_rows: int | None = 300,
    question_key: str = "question",
    answer_key: str = "answer",
    base_key: str | None = "paraphrased_answer",
    perturbed_key: str = "perturbed_answer",
) -> EvalSet:
    """Build the candidates of the first `num_rows` rows (TOFU scores 300)."""
    rows = rows[:num_rows] if num_rows else list(rows)
    if not rows:
        raise DataError(f"evaluation set {name!r} is empty")
    for i, row in enumerate(rows, start=1):
        for key in (question_key, answer_key):
            if row.get(key) is None:
                raise DataError(f"evaluation set {name!r}: row {i} lacks the field {key!r}")
    base_key = base_key if base_key and all(base_key in r for r in rows) else answer_key
    counts = {len(r.get(perturbed_key) or []) for r in rows}
    if counts == {0}:
        # info, not a warning: the holdout set has none by design (evaluation warns for the others)
        log.info("evaluation set %r has no %r: the truth ratio will be skipped", name, perturbed_key)
        k = 0
    elif len(counts) != 1:
        raise DataError(f"evaluation set {name!r}: rows have different numbers of perturbed answers {sorted(counts)}")
    else:
        k = counts.pop()

    questions, answers, example, kind, slot = [], [], [], [], []
    for i, row in enumerate(rows):
        q = row[question_key]
        cands = [(row[answer_key], GT, 0), (row[base_key], PARA, 0)]
        cands += [(p, PERTURBED, j) for j, p in enumerate(row.get(perturbed_key) or [])]
        for text, kd, j in cands:
            questions.append(q)
            answers.append(text)
            example.append(i)
            kind.append(kd)
            slot.append(j)
    candidates = encode_qa(tokenizer, template, questions, answers, max_length, what=f"eval set {name}")

    prefix = [generation_prompt(template, row[question_key]) for row in rows]
    prompt_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
    return EvalSet(
        name=name,
        rows=rows,
        candidates=candidates,
        example=np.asarray(example),
        kind=np.asarray(kind),
        slot=np.asarray(slot),
        num_perturbed=k,
        prompts=[np.asarray(p, np.int32) for p in prompt_ids],
        references=[row[answer_key] for row in rows],
    )


def generation_prompt(template, question: str) -> str:
    """The prompt plus the answer template's prefix (Phi's 'Answer:'), where generation starts;
    the prompt alone for templates without generation_prefix (phi-tofu, as TOFU's code)."""
    prompt, answer = template.format(question, "\x00")
    if not getattr(template, "generation_prefix", True):
        return prompt
    prefix = answer.split("\x00", 1)[0]
    return prompt + prefix.rstrip(" ")


def left_pad(prompts: list[np.ndarray], pad_id: int, length: int | None = None):
    """Left-padded ids and mask [N, length] for generation."""
    length = length or max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for row, p in enumerate(prompts):
        if len(p) > length:
            raise DataError(f"a prompt of {len(p)} tokens does not fit the generation length {length}")
        ids[row, length - len(p) :] = p
        mask[row, length - len(p) :] = 1
    return ids, mask
