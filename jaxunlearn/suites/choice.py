"""Multiple-choice accuracy as lm-eval computes it, in one scoring pass.

Each (question, choice) is a row: lm-eval's context (description, few-shot examples,
question) and the choice's continuation (" A"), tokenized as its HF backend does it
(`encode_pair`: context and context + continuation encoded with the tokenizer's default
special tokens, the continuation = the tokens after the context's; whitespace at the
context's end moves to the continuation; the row left-cut to the model's length). A
question's choices share its whole context, so the prefix-tree scorer computes it once per
question, not once per choice. The prediction is the argmax of the summed log-probs (acc)
and of log-probs per character of the choice (acc_norm), ties to the first, as lm-eval.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data.choice import ChoiceTask, context, continuations, LETTERS
from ..data.tokenize import IGNORE, TokenizedRows, pad_token_id
from ..evaluation.prefix_trees import score_prefix_trees


def encode_pair(tokenizer, context_text: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HFLM._encode_pair (causal models, add_bos_token unset)."""
    spaces = len(context_text) - len(context_text.rstrip())
    if spaces:
        continuation = context_text[-spaces:] + continuation
        context_text = context_text[:-spaces]
    whole = _encode(tokenizer, context_text + continuation)
    ctx = _encode(tokenizer, context_text)
    return ctx, whole[len(ctx) :]


def _encode(tokenizer, text: str) -> list[int]:
    """tok_encode: the tokenizer's default special tokens, none when the text already
    starts with the BOS (or, without one, EOS) token's text."""
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    starts_with_prefix = prefix_id is not None and text.startswith(tokenizer.decode([prefix_id]))
    kwargs = {"add_special_tokens": False} if starts_with_prefix else {}
    return list(tokenizer(text, **kwargs)["input_ids"])


def choice_rows(tokenizer, task: ChoiceTask, max_length: int) -> tuple[TokenizedRows, np.ndarray, np.ndarray]:
    """(rows, question of each row, choice of each row); a row is context + continuation,
    only the continuation supervised, cut from the left to max_length + 1 tokens."""
    rows = TokenizedRows([], [])
    question, choice = [], []
    for q, row in enumerate(task.rows):
        text = context(task, row)
        for k, cont in enumerate(continuations(row)):
            ctx, cont_ids = encode_pair(tokenizer, text, cont)
            ids = np.asarray((ctx + cont_ids)[-(max_length + 1) :], np.int32)
            labels = np.full(len(ids), IGNORE, np.int32)
            labels[len(ids) - len(cont_ids) :] = ids[len(ids) - len(cont_ids) :]
            rows.ids.append(ids)
            rows.labels.append(labels)
            question.append(q)
            choice.append(k)
    return rows, np.asarray(question), np.asarray(choice)


@dataclasses.dataclass
class ChoiceResult:
    task: str
    loglikelihoods: list[np.ndarray]  # per question, one per choice
    answers: np.ndarray
    subjects: list[str]
    choice_lengths: list[np.ndarray]  # characters of each choice's string (acc_norm)

    @property
    def predictions(self) -> np.ndarray:
        return np.array([int(np.argmax(ll)) for ll in self.loglikelihoods])

    @property
    def predictions_norm(self) -> np.ndarray:
        return np.array([int(np.argmax(ll / n)) for ll, n in zip(self.loglikelihoods, self.choice_lengths)])

    def summary(self) -> dict:
        correct = (self.predictions == self.answers).astype(np.float64)
        correct_norm = (self.predictions_norm == self.answers).astype(np.float64)
        out = {"n": len(correct), **_mean_stderr("acc", correct), **_mean_stderr("acc_norm", correct_norm)}
        subjects = sorted(set(self.subjects) - {""})
        if len(subjects) > 1:
            where = np.asarray(self.subjects)
            out["subjects"] = {
                s: {"n": int((where == s).sum()), "acc": float(correct[where == s].mean())} for s in subjects
            }
        return out

    def records(self) -> list[dict]:
        pred, pred_norm = self.predictions, self.predictions_norm
        return [
            {
                "task": self.task,
                "question": q,
                "subject": self.subjects[q],
                "answer": int(self.answers[q]),
                "prediction": int(pred[q]),
                "prediction_norm": int(pred_norm[q]),
                "loglikelihoods": [float(x) for x in self.loglikelihoods[q]],
            }
            for q in range(len(self.answers))
        ]


def _mean_stderr(name: str, values: np.ndarray) -> dict:
    """The mean and lm-eval's mean_stderr (sample standard deviation / sqrt(n))."""
    n = len(values)
    stderr = float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {name: float(values.mean()) if n else float("nan"), f"{name}_stderr": stderr}


def evaluate_choice(
    model, tokenizer, task: ChoiceTask, batch_size: int = 16, max_length: int | None = None, mesh=None, progress=None
) -> ChoiceResult:
    """Score every choice of every question of `task` once (shared contexts computed once)."""
    max_length = max_length or model.config.max_position_embeddings
    rows, question, choice = choice_rows(tokenizer, task, max_length)
    # few-shot prompts share hundreds of tokens: the width is chosen (prefix_trees.choose_trees)
    # so that a sequence holds several questions and computes their shared examples once
    scores = score_prefix_trees(
        model, rows, pad_token_id(tokenizer), np.zeros(len(rows), bool), batch_size, mesh, progress
    )
    ll = scores.sum_logp
    per_question = [ll[question == q] for q in range(len(task.rows))]
    lengths = [np.array([float(len(LETTERS[k])) for k in range(len(r["choices"]))]) for r in task.rows]
    return ChoiceResult(
        task.name,
        per_question,
        np.array([int(r["answer"]) for r in task.rows]),
        [task.subject(r) for r in task.rows],
        lengths,
    )
