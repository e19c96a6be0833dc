"""Data sources: TOFU, the Closer Look continual and real-world sets, user QA files, text.

Each returns plain rows (dicts). Local directories laid out like ../shared/data are read
in place; the TOFU hub name goes through `datasets` where a hub is reachable.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .rows import read_lines, read_rows, require_fields

TOFU_SPLITS = (
    "full",
    "forget01",
    "forget05",
    "forget10",
    "retain90",
    "retain95",
    "retain99",
    "holdout01",
    "holdout05",
    "holdout10",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors",
    "real_authors_perturbed",
    "world_facts",
    "world_facts_perturbed",
)
TOFU_HUB = "locuslab/TOFU"


def default_data_dir() -> Path:
    """$JAXUNLEARN_DATA, else the nearest shared/data beside the checkout or one of its
    parent directories (../shared/data on these machines), else ../shared/data (whose
    absence the loaders report with the fix)."""
    env = os.environ.get("JAXUNLEARN_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [parent / "shared" / "data" for parent in here.parents[2:]]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _tofu_dir(data_dir) -> Path:
    return Path(data_dir) / "tofu" if data_dir is not None else default_data_dir() / "tofu"


def load_tofu(split: str, data_dir: str | Path | None = None) -> list[dict]:
    """A TOFU split from `data_dir/tofu/<split>.json`, or from the hub if data_dir == 'hub'."""
    if split == "idontknow":
        return [{"text": line} for line in load_refusals(data_dir)]
    if split not in TOFU_SPLITS:
        raise DataError(f"unknown TOFU split {split!r}; known: {', '.join(TOFU_SPLITS)}, idontknow")
    if str(data_dir) == "hub":
        return _tofu_from_hub(split)
    path = _tofu_dir(data_dir) / f"{split}.json"
    if not path.exists():
        raise DataError(
            f"TOFU split file {path} does not exist; set data_dir to a directory holding tofu/<split>.json "
            f"(or 'hub' to download {TOFU_HUB} where a hub is reachable)"
        )
    return read_rows(path)


def _tofu_from_hub(split: str) -> list[dict]:
    try:
        import datasets

        return list(datasets.load_dataset(TOFU_HUB, split, split="train"))
    except Exception as e:
        raise DataError(
            f"could not load {TOFU_HUB}/{split} from the hub ({type(e).__name__}); "
            "point data_dir at a local copy laid out as tofu/<split>.json"
        ) from None


def load_refusals(data_dir: str | Path | None = None, path: str | Path | None = None) -> list[str]:
    """TOFU's 99 refusal strings ("I don't know" answers) used by the IDK-style objectives."""
    return read_lines(path or _tofu_dir(data_dir) / "idontknow.jsonl")


# --- The Closer Look paper's data (sail-sg/closer-look-LLM-unlearning) -------------------

CONTINUAL_SPLITS = {"forget01": "retain90", "forget05": "retain50", "forget10": "retain10"}


def _closer_dir(data_dir) -> Path:
    return Path(data_dir or default_data_dir()) / "closer-look"


def continual_task(
    split: str, task_id: int, unlearned: list[int] | None = None, data_dir: str | Path | None = None
) -> tuple[list[dict], list[dict]]:
    """(forget rows, retain rows) of continual task `task_id` of the paper.

    The forget set is the pool's rows with task_id == t. The retain set is
    retain{100 - min(10*p, 90)} plus every pool row whose task is not yet unlearned, where
    `unlearned` lists the tasks unlearned so far *including* t (default: tasks 1..t), as in
    the paper's `get_task_data`.
    """
    if split not in CONTINUAL_SPLITS:
        raise DataError(f"unknown continual split {split!r}; known: {', '.join(CONTINUAL_SPLITS)}")
    base = _closer_dir(data_dir) / "tofu"
    pool = read_rows(base / f"{split}.json")
    require_fields(pool, ("task_id", "question", "answer"), str(base / f"{split}.json"))
    tasks = sorted({int(r["task_id"]) for r in pool})
    if task_id not in tasks:
        raise DataError(f"{split} has tasks {tasks[0]}..{tasks[-1]}; task {task_id} does not exist")
    done = set(unlearned if unlearned is not None else range(1, task_id + 1)) | {task_id}
    forget = [r for r in pool if int(r["task_id"]) == task_id]
    retain = read_rows(base / f"{CONTINUAL_SPLITS[split]}.json")
    retain = retain + [r for r in pool if int(r["task_id"]) not in done]
    return forget, retain


def continual_task_ids(split: str, data_dir: str | Path | None = None) -> list[int]:
    pool = read_rows(_closer_dir(data_dir) / "tofu" / f"{split}.json")
    return sorted({int(r["task_id"]) for r in pool})


def continual_eval_rows(split: str, task_id: int, data_dir: str | Path | None = None) -> list[dict]:
    rows = read_rows(_closer_dir(data_dir) / "tofu" / f"{split}_perturbed.json")
    return [r for r in rows if int(r["task_id"]) == task_id]


REAL_WORLD_FILES = ("forget", "forget_perturbed", "neighbor", "neighbor_perturbed")


def load_real_world(name: str, data_dir: str | Path | None = None) -> list[dict]:
    """The paper's real-world sets: forget (20 people x 20 QA), neighbor (retain), and their
    evaluation files (`*_perturbed`)."""
    if name not in REAL_WORLD_FILES:
        raise DataError(f"unknown real-world set {name!r}; known: {', '.join(REAL_WORLD_FILES)}")
    return read_rows(_closer_dir(data_dir) / "real_world" / f"{name}.json")


# --- A user's own data --------------------------------------------------------------------


def load_qa_file(
    path: str | Path, question_key: str = "question", answer_key: str = "answer", fmt: str | None = None
) -> list[dict]:
    """Question/answer rows from JSON, JSON Lines, CSV or Parquet, renamed to question/answer."""
    rows = read_rows(path, fmt)
    require_fields(rows, (question_key, answer_key), str(path))
    return [{**r, "question": str(r[question_key]), "answer": str(r[answer_key])} for r in rows]


def load_text_file(path: str | Path, text_key: str = "text", fmt: str | None = None) -> list[dict]:
    """Raw-text documents, one per row (a `.txt` file: one per line)."""
    path = Path(path)
    if path.suffix == ".txt":
        return [{"text": line} for line in read_lines(path)]
    rows = read_rows(path, fmt)
    require_fields(rows, (text_key,), str(path))
    return [{"text": str(r[text_key])} for r in rows]
