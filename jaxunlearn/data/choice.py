"""Multiple-choice question sets in the hub's schemas, and their prompts as lm-eval builds
them.

WMDP (cais/wmdp, configs wmdp-bio / wmdp-cyber / wmdp-chem, split test) and MMLU
(cais/mmlu, a config per subject or `all`, splits test / dev) rows hold `question`,
`choices` (a list of strings) and `answer` (the index of the right one); MMLU's also hold
`subject`. The prompt is lm-eval's for these tasks: a description line, then
`question.strip()`, the choices as `A. ...` lines and `Answer:`; each choice is scored as
the continuation " A", " B", ... (its target delimiter and letter). Few-shot examples are
the first k rows of the dev split, each followed by its answer and a blank line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import DataError
from .hub_layout import load_split
from .rows import read_rows

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WMDP_DOMAINS = {"bio": "biology", "cyber": "computer security", "chem": "chemistry"}


@dataclasses.dataclass(frozen=True)
class ChoiceTask:
    """One task: its rows and how a prompt is built."""

    name: str
    rows: list[dict]
    description: str | None  # before the examples and question; None: per row, of its MMLU subject
    fewshot: dict[str, list[dict]] = dataclasses.field(default_factory=dict)  # subject ("" for all) -> examples

    def subject(self, row: dict) -> str:
        return str(row.get("subject") or "")


def check_rows(rows: list[dict], source: str) -> None:
    """Every row has a question, at least 2 choices and an answer index among them."""
    if not rows:
        raise DataError(f"{source}: no questions")
    for i, row in enumerate(rows, start=1):
        for field in ("question", "choices", "answer"):
            if row.get(field) is None:
                raise DataError(f"{source}: row {i} lacks the field {field!r} (it has: {', '.join(sorted(row))})")
        choices = row["choices"]
        if not isinstance(choices, (list, tuple)) or len(choices) < 2:
            raise DataError(f"{source}: row {i} field 'choices' needs at least 2 choices, got {choices!r}")
        if len(choices) > len(LETTERS):
            raise DataError(f"{source}: row {i} has {len(choices)} choices; at most {len(LETTERS)} can be lettered")
        try:
            answer = int(row["answer"])
        except (TypeError, ValueError):
            raise DataError(f"{source}: row {i} field 'answer' must be a choice index, got {row['answer']!r}") from None
        if not 0 <= answer < len(choices):
            raise DataError(
                f"{source}: row {i} field 'answer' is {answer}, out of range for its {len(choices)} choices "
                f"(0..{len(choices) - 1})"
            )


def describe(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject}.\n\n"


def question_text(row: dict) -> str:
    """lm-eval's doc_to_text for WMDP and MMLU."""
    lines = [str(row["question"]).strip()]
    lines += [f"{LETTERS[k]}. {c}" for k, c in enumerate(row["choices"])]
    return "\n".join(lines) + "\nAnswer:"


def context(task: ChoiceTask, row: dict) -> str:
    """lm-eval's context: description, few-shot examples (each answered, then a blank line),
    the question."""
    subject = task.subject(row)
    description = task.description if task.description is not None else describe(subject_label(subject))
    examples = task.fewshot.get(subject, task.fewshot.get("", []))
    shots = "".join(f"{question_text(s)} {LETTERS[int(s['answer'])]}\n\n" for s in examples)
    return description + shots + question_text(row)


def continuations(row: dict) -> list[str]:
    return [f" {LETTERS[k]}" for k in range(len(row["choices"]))]


def load_task(name: str, data_dir: str | Path | None, num_fewshot: int = 0) -> ChoiceTask:
    """wmdp_bio | wmdp_cyber | wmdp_chem | mmlu (all subjects) | mmlu_<subject> from copies of
    cais/wmdp and cais/mmlu under data_dir (`wmdp/`, `mmlu/`) or the hub; file:PATH[:SUBJECT]
    reads a JSON/JSONL/CSV/Parquet file of rows in the same schema."""
    if name.startswith("file:"):
        path, _, subject = name[5:].partition("::")
        rows = read_rows(path)
        for r in rows:
            if isinstance(r.get("choices"), str):  # CSV: a JSON list in one cell
                r["choices"] = json.loads(r["choices"])
        check_rows(rows, path)
        return ChoiceTask(Path(path).stem, rows, describe(subject or "general knowledge"))
    if name.startswith("wmdp_"):
        domain = name[5:]
        if domain not in WMDP_DOMAINS:
            raise DataError(f"unknown WMDP task {name!r}; known: {', '.join('wmdp_' + d for d in WMDP_DOMAINS)}")
        base = "hub" if str(data_dir) == "hub" else (Path(data_dir) / "wmdp" if data_dir else None)
        rows = load_split("cais/wmdp", f"wmdp-{domain}", "test", base)
        check_rows(rows, f"cais/wmdp wmdp-{domain}")
        if num_fewshot:
            raise DataError("WMDP has no few-shot split (lm-eval runs it zero-shot); set num_fewshot to 0")
        return ChoiceTask(name, rows, describe(WMDP_DOMAINS[domain]))
    if name == "mmlu" or name.startswith("mmlu_"):
        subject = "all" if name == "mmlu" else name[5:]
        base = "hub" if str(data_dir) == "hub" else (Path(data_dir) / "mmlu" if data_dir else None)
        rows = load_split("cais/mmlu", subject, "test", base)
        check_rows(rows, f"cais/mmlu {subject}")
        if subject != "all":
            rows = [{**r, "subject": r.get("subject") or subject} for r in rows]
        fewshot: dict[str, list[dict]] = {}
        if num_fewshot:  # lm-eval's first_n sampler: the first k dev rows of the row's subject
            dev = load_split("cais/mmlu", subject, "dev", base)
            check_rows(dev, f"cais/mmlu {subject} dev")
            for r in dev:
                shots = fewshot.setdefault(str(r.get("subject") or subject), [])
                if len(shots) < num_fewshot:
                    shots.append(r)
        return ChoiceTask(name, rows, None, fewshot)
    raise DataError(
        f"unknown multiple-choice task {name!r}; use wmdp_bio, wmdp_cyber, wmdp_chem, mmlu, mmlu_<subject> "
        "or file:PATH[::SUBJECT]"
    )


def subject_label(subject: str) -> str:
    """MMLU's description names the subject with spaces (high_school_biology -> high school biology)."""
    return subject.replace("_", " ")
