"""`evaluate(cfg)`: load the model and judges, evaluate, write the results."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax

from ..checkpoints.api import load_pretrained
from ..config import RunConfig
from .loading import evaluation_mesh, load_for_run, warn_if_config_misfits
from .suites import evaluate_suite, lm_eval_results
from ..parallel import initialize_distributed_from_env
from ..paths import check_writable_dir
from ..data.templates import template_for
from ..evaluation.aggregate import check_same_forget_rows, forget_quality, summarize
from ..evaluation.evaluate import evaluate_model
from ..evaluation.kernels import batch_mesh
from ..evaluation.logs_io import read_evaluation
from ..evaluation.report import compare_runs, write_eval
from ..evaluation.sets import load_sets
from ..storage import stages_url_output

log = logging.getLogger(__name__)


def make_judge(cfg: RunConfig, model=None, tokenizer=None):
    name = cfg.eval.nli_judge
    if name == "none":
        return None
    if name == "causal-lm":
        from ..evaluation.nli import CausalLMNLIJudge

        judge_model, judge_tok = load_pretrained(cfg.eval.nli_model)
        return CausalLMNLIJudge(judge_model, judge_tok, cfg.eval.nli_model)
    from ..evaluation.nli import PAPER_NLI_MODEL, HubNLIJudge

    return HubNLIJudge(PAPER_NLI_MODEL if name == "hub" else name)


@stages_url_output("eval")
def evaluate(
    cfg: RunConfig, model=None, tokenizer=None, out_dir: str | Path | None = None, progress: bool = True
) -> dict:
    """Evaluate `model` (default: cfg.model.path) and write per-example, summary, report, plots.

    On several devices the model is loaded onto `cfg.mesh` and batches are split over its
    batch axes. Launched on several hosts (jax.distributed from the environment), every
    process runs this same evaluation on one mesh over all their devices, gets every result
    back (scoring and decoding outputs are gathered), and process 0 writes the files."""
    t0 = time.perf_counter()
    initialize_distributed_from_env()
    writes = jax.process_index() == 0
    out = Path(out_dir) if out_dir else cfg.output_dir("eval")
    if writes:
        check_writable_dir(out, "output.dir")  # before the evaluation, not after it
    if cfg.eval.benchmark != "tofu":  # its data read before the model loads
        return evaluate_suite(cfg, out, model, tokenizer, progress)
    if model is None:
        model, tokenizer = load_for_run(cfg, mesh=evaluation_mesh(cfg))
        warn_if_config_misfits(cfg, tokenizer)
    template = template_for(cfg.data.template, tokenizer)
    embedder = None
    if cfg.eval.cosine and cfg.eval.generate:
        from ..evaluation.bert import SentenceEmbedder

        embedder = SentenceEmbedder()
    judge = make_judge(cfg) if cfg.eval.generate else None
    reference = (
        load_for_run(cfg, cfg.eval.reference_model, require_tokenizer=False, mesh=batch_mesh(model))[0]
        if cfg.eval.reference_model
        else None
    )
    retain_records, retain_summary, _ = read_evaluation(cfg.eval.retain_eval) if cfg.eval.retain_eval else (None,) * 3
    sets = load_sets(cfg.data, cfg.eval, cfg.continual.split)
    if retain_records is not None:  # another split or other rows: refused now, not after the evaluation
        rows = [r for s in sets if s.name == "forget" for r in s.rows][: cfg.eval.num_rows]
        forget = [{"set": "forget", "question": r.get("question")} for r in rows]
        check_same_forget_rows(forget, retain_records, cfg.eval.retain_eval)
    records, summary = evaluate_model(
        model,
        tokenizer,
        template,
        sets,
        cfg.eval,
        cfg.data.max_length,
        tuple(cfg.data.buckets),
        cfg.model.matmul_precision,
        embedder,
        judge,
        reference,
        progress,
    )
    if cfg.eval.retain_eval:
        forget_quality(summary, records, retain_records, retain_summary, cfg.eval.retain_eval)
    if cfg.choice.lm_eval_tasks:  # general-utility numbers beside TOFU's
        summary["lm_eval"] = lm_eval_results(cfg, model, tokenizer)
    summary["model"] = str(cfg.model.path)
    summary["seconds"] = time.perf_counter() - t0
    log.info("evaluation took %.1f s", summary["seconds"])
    if writes:
        write_eval(out, records, summary, retain_records)
    return summary


def aggregate_evaluation(run: str | Path, retain: str | Path | None = None, out_dir: str | Path | None = None) -> dict:
    """Every set number, model utility, forget efficacy, MIA AUCs and, against `retain`,
    forget quality and PrivLeak, from saved per-example results alone (no model runs).

    `run` and `retain` may each be a jaxunlearn eval directory (per_example.jsonl), TOFU's
    eval logs (a directory of eval_log*.json, or eval_log_aggregated.json) or
    open-unlearning's TOFU_EVAL.json. `out_dir`, if given, gets the files `evaluate` writes.
    """
    if out_dir is not None:
        check_writable_dir(out_dir, "--out")
    records, _, fmt = read_evaluation(run)
    summary = summarize(records)
    retain_records = None
    if retain is not None:
        retain_records, retain_summary, _ = read_evaluation(retain)
        forget_quality(summary, records, retain_records, retain_summary, str(retain))
    summary.update(source=str(run), format=fmt)
    if out_dir is not None:
        write_eval(Path(out_dir), records, summary, retain_records)
    return summary


def compare(
    run_dirs: list[str],
    out: str | Path | None = None,
    retain: str | None = None,
    recompute: bool = False,
    labels: list[str] | None = None,
    at_utility: float | None = None,
    baseline: str | None = None,
    utility_metric: str = "model_utility",
) -> str:
    """Several evaluations side by side (markdown, and a plot under `out`); with `recompute`
    or a `retain` evaluation every number comes from the per-example results
    (aggregate_evaluation), so TOFU / open-unlearning logs can sit beside runs."""
    if out is not None:
        check_writable_dir(out, "--out")
    if at_utility is not None:
        return _compare_at_utility(run_dirs, out, labels, at_utility, baseline, utility_metric)
    if all(_kind(d) == "robustness" for d in run_dirs):
        return _compare_robustness(run_dirs, out, labels)
    if all(_kind(d) in ("muse", "choice") for d in run_dirs):
        return _compare_suites(run_dirs, out, labels)
    summaries = None
    if recompute or retain:
        summaries = [aggregate_evaluation(d, retain) for d in run_dirs]
    return compare_runs(run_dirs, out, summaries, labels)


def _kind(run_dir) -> str | None:
    """robustness (an attack summary), muse or choice (a benchmark evaluation), else None."""
    import json

    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
        return summary.get("kind") or summary.get("benchmark")
    except (OSError, ValueError, AttributeError):
        return None


def _compare_suites(run_dirs, out, labels) -> str:
    """MUSE or multiple-choice evaluations side by side: one table, one plot."""
    import json

    from ..evaluation.report import run_labels
    from ..suites.report import compare as compare_suites

    names = labels or run_labels(run_dirs)
    rows = [(n, json.loads((Path(d) / "summary.json").read_text())) for n, d in zip(names, run_dirs)]
    return compare_suites(rows, Path(out) if out is not None else None)


def _compare_robustness(run_dirs, out, labels) -> str:
    """`jaxunlearn attack` results of several methods: one table, one plot."""
    import json

    from ..attacks.robustness import compare_markdown, plot
    from ..evaluation.report import run_labels

    names = labels or run_labels(run_dirs)
    summaries = {n: json.loads((Path(d) / "summary.json").read_text()) for n, d in zip(names, run_dirs)}
    table = compare_markdown(summaries)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "robustness.md").write_text(table)
        plot(summaries, Path(out) / "robustness.png")
    return table


def _compare_at_utility(run_dirs, out, labels, drop: float, baseline: str | None, metric: str) -> str:
    """Each unlearn run at its evaluated step whose utility drop from `baseline` is closest
    to `drop`, side by side, so forgetting is compared at the same cost."""
    from ..errors import ConfigError
    from ..evaluation.report import read_summary, run_labels
    from ..evaluation.selection import lookup, pick_at_utility_drop, step_evaluations

    if baseline is None:
        raise ConfigError("--at-utility needs --baseline DIR: the evaluation of the model before unlearning")
    base_path = Path(baseline) / "summary.json"
    if not base_path.exists():
        raise ConfigError(f"--baseline {baseline} holds no summary.json; give a jaxunlearn eval directory")
    base_value = lookup(read_summary(base_path), metric)
    if base_value is None:
        raise ConfigError(
            f"the baseline has no {metric!r} (model utility needs the retain, real-authors and world-facts sets); "
            "choose another with --utility-metric, e.g. retain.probability"
        )
    names = labels or run_labels(run_dirs)
    picks = [pick_at_utility_drop(step_evaluations(d), base_value, drop, metric) for d in run_dirs]
    rows = [f"{name} @ step {p['step']} ({metric} drop {p['utility_drop']:.1%})" for name, p in zip(names, picks)]
    summaries = [read_summary(Path(p["dir"]) / "summary.json") for p in picks]
    head = f"Each run at the evaluated step whose {metric} drop from {baseline} is closest to {drop:.1%}:\n\n"
    return head + compare_runs([p["dir"] for p in picks], out, summaries, rows)
