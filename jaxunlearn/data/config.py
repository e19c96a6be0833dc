"""The data section of the run config."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..settings import setting


@dataclasses.dataclass
class DataSection:
    source: Literal["tofu", "closer_look", "real_world", "files", "corpus", "muse"] = setting(
        "tofu",
        "where forget and retain rows come from; corpus (text files) and muse (MUSE's raw text) are cut "
        "into max_length-token windows",
    )
    data_dir: str | None = setting(
        None,
        "data root holding tofu/ and closer-look/ (null: $JAXUNLEARN_DATA or "
        "../shared/data); hub: locuslab/TOFU through datasets",
    )
    forget_split: str = setting(
        "forget10", "TOFU forget split (forget01 | forget05 | forget10); muse: forget, scal/forget_k, sust/forget_k"
    )
    retain_split: str = setting("retain90", "TOFU retain split (retain99 | retain95 | retain90); muse: retain1")
    forget_file: str | None = setting(
        None, "source=files: the forget QA file (JSON, JSONL, CSV, Parquet); corpus: the forget text"
    )
    retain_file: str | None = setting(None, "source=files: the retain QA file; corpus: the retain text")
    muse_corpus: Literal["News", "Books"] = setting(
        "News", "source=muse: MUSE-News or MUSE-Books (data_dir: a copy of muse-bench/MUSE-<corpus>, or hub)"
    )
    chunking: Literal["open_unlearning", "documents"] = setting(
        "open_unlearning",
        "corpus/muse windows: open_unlearning (documents joined, cut every max_length tokens, as its "
        "PretrainingDataset) or documents (each document cut on its own)",
    )
    text_key: str = setting("text", "source=corpus: text field of JSON/JSONL/CSV/Parquet files (.txt: a line each)")
    question_key: str = setting("question", "question field of user QA files")
    answer_key: str = setting("answer", "answer field of user QA files")
    refusals_file: str | None = setting(None, "refusal strings, one per line (null: TOFU's idontknow.jsonl)")
    pairing: Literal["seeded", "closer_look"] = setting(
        "seeded",
        "retain row and refusal per forget row: seeded (numpy, by train.seed and index) or closer_look "
        "(the paper code's torch.manual_seed(index) draws)",
    )
    template: str = setting(
        "auto", "prompt format: auto | llama2-chat | phi | phi-tofu | llama3-instruct | chatml | plain | chat"
    )
    max_length: int = setting(
        500, "tokens per training row (longer rows are cut, and counted); corpus/muse: the window (MUSE 2048)"
    )
    buckets: list[int] = setting([64, 128, 256, 512], "padded lengths a batch may take (one compile each)")
    pad_to: int | None = setting(None, "one fixed padded length instead of buckets (the paper: 500)")
    max_forget_rows: int | None = setting(None, "keep the first N forget rows (demos, smoke runs)")
    max_retain_rows: int | None = setting(None, "keep the first N retain rows")
    train_split: str = setting(
        "full", "finetune: TOFU split to train on (full: the target model; retain90: a retain model)"
    )
    train_file: str | None = setting(None, "finetune: a user QA file instead of a TOFU split")
    max_train_rows: int | None = setting(None, "finetune: keep the first N rows")
