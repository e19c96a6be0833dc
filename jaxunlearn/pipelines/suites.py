"""`eval.benchmark: muse | choice`: MUSE's metrics, or multiple-choice accuracy (WMDP,
MMLU) with optional lm-eval tasks, on one model, written as summary / per-example / report."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.choice import load_task
from ..data.muse import muse_dir
from ..evaluation.evaluate import check_vocab, place_for_evaluation
from ..suites.choice import evaluate_choice
from ..suites.lm_eval_tasks import run_lm_eval
from ..suites.muse import evaluate_muse, muse_data
from .loading import evaluation_mesh, load_for_run
from ..suites.report import write_results

log = logging.getLogger(__name__)


def evaluate_suite(cfg: RunConfig, out: Path, model=None, tokenizer=None, progress: bool = True) -> dict:
    """Read the benchmark's data (its errors come before any model loads), load the model
    unless given (onto the evaluation mesh, as `evaluate`), evaluate, write."""
    t0 = time.perf_counter()
    if cfg.eval.benchmark == "muse":
        data = muse_data(cfg.data.muse_corpus, muse_dir(cfg.data.muse_corpus, cfg.data.data_dir), cfg.muse)
    else:
        tasks = choice_tasks(cfg)
    if model is None:
        model, tokenizer = load_for_run(cfg, mesh=evaluation_mesh(cfg))
    check_vocab(model, tokenizer)
    if cfg.eval.benchmark == "muse":
        e = cfg.eval
        records, summary = evaluate_muse(
            model, tokenizer, data, cfg.muse, e.batch_size, e.generation_batch_size, e.overlap_generation
        )
    else:
        records, summary = choice_results(cfg, model, tokenizer, tasks, progress)
    if cfg.choice.lm_eval_tasks:
        summary["lm_eval"] = lm_eval_results(cfg, model, tokenizer)
    summary["model"] = str(cfg.model.path)
    summary["seconds"] = time.perf_counter() - t0
    if jax.process_index() == 0:  # every process evaluated alike (multi-host); one writes
        write_results(out, records, summary)
    return summary


def lm_eval_results(cfg: RunConfig, model, tokenizer) -> dict:
    c = cfg.choice
    return run_lm_eval(model, tokenizer, c.lm_eval_tasks, cfg.eval.batch_size, c.lm_eval_include, c.lm_eval_limit)


def choice_tasks(cfg: RunConfig) -> list:
    c = cfg.choice
    tasks = [load_task(name, c.data_dir or cfg.data.data_dir, c.num_fewshot) for name in c.tasks]
    if c.num_rows:
        tasks = [dataclasses.replace(t, rows=t.rows[: c.num_rows]) for t in tasks]
    return tasks


def choice_results(cfg: RunConfig, model, tokenizer, tasks: list, progress: bool = True) -> tuple[list, dict]:
    c = cfg.choice
    summary: dict = {"benchmark": "choice", "num_fewshot": c.num_fewshot, "tasks": {}}
    records: list[dict] = []
    model, mesh = place_for_evaluation(model, cfg.eval.batch_size)
    total = sum(len(t.rows) * len(t.rows[0]["choices"]) for t in tasks)
    with tqdm(total=total, desc="multiple choice (choices)", unit="row", disable=not progress) as bar:
        for task in tasks:
            result = evaluate_choice(model, tokenizer, task, cfg.eval.batch_size, c.max_length, mesh, bar)
            summary["tasks"][task.name] = result.summary()
            records += result.records()
    return records, summary
