"""`eval.benchmark: muse | choice`: MUSE's metrics, or multiple-choice accuracy (WMDP,
MMLU) with optional lm-eval tasks, on one model, written as summary / per-example / report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.choice import load_task
from ..data.muse import muse_dir
from ..evaluation.evaluate import check_vocab, data_mesh
from ..suites.choice import evaluate_choice
from ..suites.lm_eval_tasks import run_lm_eval
from ..suites.muse import evaluate_muse
from ..suites.report import write_results

log = logging.getLogger(__name__)


def evaluate_suite(cfg: RunConfig, model, tokenizer, out: Path, progress: bool = True) -> dict:
    t0 = time.perf_counter()
    check_vocab(model, tokenizer)
    if cfg.eval.benchmark == "muse":
        data_dir = muse_dir(cfg.data.muse_corpus, cfg.data.data_dir)
        records, summary = evaluate_muse(
            model, tokenizer, cfg.data.muse_corpus, data_dir, cfg.muse, cfg.eval.batch_size, progress
        )
    else:
        records, summary = choice_results(cfg, model, tokenizer, progress)
    if cfg.choice.lm_eval_tasks:
        summary["lm_eval"] = lm_eval_results(cfg, model, tokenizer)
    summary["model"] = str(cfg.model.path)
    summary["seconds"] = time.perf_counter() - t0
    write_results(out, records, summary)
    return summary


def lm_eval_results(cfg: RunConfig, model, tokenizer) -> dict:
    c = cfg.choice
    return run_lm_eval(model, tokenizer, c.lm_eval_tasks, cfg.eval.batch_size, c.lm_eval_include, c.lm_eval_limit)


def choice_results(cfg: RunConfig, model, tokenizer, progress: bool = True) -> tuple[list, dict]:
    c = cfg.choice
    data_dir = c.data_dir or cfg.data.data_dir
    tasks = [load_task(name, data_dir, c.num_fewshot) for name in c.tasks]  # every file read before scoring
    if c.num_rows:
        tasks = [type(t)(t.name, t.rows[: c.num_rows], t.description, t.fewshot) for t in tasks]
    summary: dict = {"benchmark": "choice", "num_fewshot": c.num_fewshot, "tasks": {}}
    records: list[dict] = []
    mesh = data_mesh(cfg.eval.batch_size)
    total = sum(len(t.rows) * len(t.rows[0]["choices"]) for t in tasks)
    with tqdm(total=total, desc="multiple choice (choices)", unit="row", disable=not progress) as bar:
        for task in tasks:
            result = evaluate_choice(model, tokenizer, task, cfg.eval.batch_size, c.max_length, mesh, bar)
            summary["tasks"][task.name] = result.summary()
            records += result.records()
    return records, summary
