"""From a RunConfig's data section to paired, tokenized streams."""

from __future__ import annotations

import logging

from ..config import RunConfig
from ..data import build_streams, continual_task, load_qa_file, load_real_world, load_refusals, load_tofu
from ..data.corpus import build_corpus_streams, encode_corpus
from ..data.muse import load_muse_texts
from ..data.sources import load_text_file
from ..data.streams import needs_refusals, needs_retain
from ..data.templates import template_for
from ..data.tokenize import TokenizedRows, encode_qa
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

CORPUS_SOURCES = ("corpus", "muse")  # raw text cut into windows, not question/answer rows


def is_corpus(cfg: RunConfig) -> bool:
    return cfg.data.source in CORPUS_SOURCES


def forget_and_retain(cfg: RunConfig, task_id: int | None = None, unlearned=None) -> tuple[list, list]:
    d = cfg.data
    if d.source == "tofu":
        forget, retain = load_tofu(d.forget_split, d.data_dir), load_tofu(d.retain_split, d.data_dir)
    elif d.source == "closer_look":
        split = cfg.continual.split or d.forget_split
        forget, retain = continual_task(split, task_id or 1, unlearned, d.data_dir)
    elif d.source == "real_world":
        forget, retain = load_real_world("forget", d.data_dir), load_real_world("neighbor", d.data_dir)
    elif d.source == "files":
        if not d.forget_file:
            raise ConfigError("data.source=files needs data.forget_file (and usually data.retain_file)")
        forget = load_qa_file(d.forget_file, d.question_key, d.answer_key)
        retain = load_qa_file(d.retain_file, d.question_key, d.answer_key) if d.retain_file else []
    elif d.source == "corpus":
        if not d.forget_file:
            raise ConfigError("data.source=corpus needs data.forget_file (text: .txt lines, or JSON/JSONL/CSV/Parquet)")
        forget = load_text_file(d.forget_file, d.text_key)
        retain = load_text_file(d.retain_file, d.text_key) if d.retain_file else []
    elif d.source == "muse":
        forget = [{"text": t} for t in load_muse_texts(d.muse_corpus, d.forget_split, d.data_dir)]
        retain = (
            [{"text": t} for t in load_muse_texts(d.muse_corpus, d.retain_split, d.data_dir)] if d.retain_split else []
        )
    else:
        raise ConfigError(f"unknown data.source {d.source!r}")
    if is_corpus(cfg) and not any(str(r.get("text") or "").strip() for r in forget):
        where = d.forget_file if d.source == "corpus" else f"MUSE {d.muse_corpus} {d.forget_split}"
        raise DataError(f"the forget corpus {where} has no text: nothing to unlearn")
    if d.max_forget_rows:
        forget = forget[: d.max_forget_rows]
    if d.max_retain_rows:
        retain = retain[: d.max_retain_rows]
    return forget, retain


def unlearning_streams(cfg: RunConfig, tokenizer, objective, forget, retain) -> dict[str, TokenizedRows]:
    if is_corpus(cfg):
        return build_corpus_streams(
            tokenizer,
            [r["text"] for r in forget],
            [r["text"] for r in retain],
            objective.streams,
            cfg.data.max_length,
            cfg.train.seed,
            cfg.data.chunking,
            f"objective {objective.name}",
        )
    refusals = None
    if needs_refusals(objective.streams):
        refusals = load_refusals(cfg.data.data_dir, cfg.data.refusals_file)
    missing_retain = needs_retain(objective.streams) if not retain else []
    if missing_retain:
        raise DataError(
            f"objective {objective.name} needs the stream(s) {', '.join(missing_retain)}, but the data has no "
            "retain set; configure one (data.retain_split or data.retain_file) or use a forget-only objective"
        )
    return build_streams(
        tokenizer,
        template_for(cfg.data.template, tokenizer),
        forget,
        retain,
        refusals,
        objective.streams,
        cfg.data.max_length,
        cfg.train.seed,
        cfg.data.pairing,
    )


def finetune_rows(cfg: RunConfig) -> list[dict]:
    d = cfg.data
    if d.source == "corpus":
        if not d.train_file:
            raise ConfigError("finetune with data.source=corpus needs data.train_file (the text to train on)")
        rows = load_text_file(d.train_file, d.text_key)
    elif d.source == "muse":  # e.g. train_split=forget: the forget corpus, for a task vector
        rows = [{"text": t} for t in load_muse_texts(d.muse_corpus, d.train_split, d.data_dir)]
    elif d.train_file:
        rows = load_qa_file(d.train_file, d.question_key, d.answer_key)
    else:
        rows = load_tofu(d.train_split, d.data_dir)
    return rows[: d.max_train_rows] if d.max_train_rows else rows


def finetune_streams(cfg: RunConfig, tokenizer, rows) -> dict[str, TokenizedRows]:
    """Plain answer-NLL training on `rows`, as the single stream the GD term reads."""
    if not rows:
        raise DataError("the finetuning set is empty")
    if is_corpus(cfg):
        return {"retain": encode_corpus(tokenizer, [r["text"] for r in rows], cfg.data.max_length, cfg.data.chunking)}
    template = template_for(cfg.data.template, tokenizer)
    encoded = encode_qa(
        tokenizer,
        template,
        [r["question"] for r in rows],
        [r["answer"] for r in rows],
        cfg.data.max_length,
        what="finetune",
    )
    return {"retain": encoded}


def padded_lengths(cfg: RunConfig, streams: dict[str, TokenizedRows]) -> tuple[tuple[int, ...], int | None]:
    """(buckets, pad_to) of the training batches. Corpus windows are all one length (the
    last one shorter): without data.pad_to they pad to the longest, one compiled shape."""
    if is_corpus(cfg) and cfg.data.pad_to is None:
        return tuple(cfg.data.buckets), int(max(rows.lengths().max() for rows in streams.values()))
    return tuple(cfg.data.buckets), cfg.data.pad_to
