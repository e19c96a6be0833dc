"""`attack(cfg)`: attack an unlearned model's forgetting and write the robustness summary.

Each attack is followed by the standard evaluation of the forget set (and of the retain
set where the attack could hurt it: quantization, relearning); the unlearned model, the
model before unlearning (attack.target_model) and a retain model (attack.retain_model)
are evaluated once as references, so each attack's recovery ratio can be read."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ..attacks.extraction import sampled_extraction
from ..attacks.probes import apply_probe, load_probes
from ..attacks.quantize import quantize_params
from ..attacks.robustness import markdown, plot, robustness_rows
from ..config import RunConfig
from ..data.templates import template_for
from ..errors import ConfigError
from ..evaluation.evaluate import evaluate_model
from ..evaluation.sets import load_sets
from ..objectives import build_objective
from ..parallel import initialize_distributed_from_env
from ..paths import check_writable_dir
from ..training.config import OutputSection, TrainSection
from ..training.loop import train
from .data_setup import finetune_streams, forget_and_retain
from .loading import load_for_run, warn_if_config_misfits
from ..storage import stages_url_output

log = logging.getLogger(__name__)
SUMMARY = "summary.json"
PROBE_LENGTH = 512  # tokens a probed row may take (3 in-context QA pairs and a wrapped question fit)


@stages_url_output("attack")
def attack(cfg: RunConfig, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Run cfg.attack.attacks on model.path; write summary.json, report.md, robustness.png."""
    initialize_distributed_from_env()
    t0 = time.perf_counter()
    a = cfg.attack
    out = check_writable_dir(Path(out_dir) if out_dir else cfg.output_dir("attack"), "output.dir")
    probes = load_probes(a.probes_file) if "probes" in a.attacks else {}
    unknown = [p for p in a.probes if p not in probes] if probes else []
    if unknown:
        raise ConfigError(f"attack.probes names unknown probe(s) {unknown}; known: {', '.join(probes)}")
    model, tokenizer = load_for_run(cfg)
    warn_if_config_misfits(cfg, tokenizer)
    run = _Evaluator(cfg, tokenizer, progress)
    references = {"unlearned": run.metrics(model)}
    target = load_for_run(cfg, a.target_model)[0] if a.target_model else None
    if target is not None:
        references["target"] = run.metrics(target)
    if a.retain_model:
        references["retain"] = run.metrics(load_for_run(cfg, a.retain_model)[0])
    results, notes = [], []
    if "quantize" in a.attacks:
        graphdef, state = nnx.split(model)
        for bits in a.quantize_bits:
            quantized = nnx.merge(graphdef, quantize_params(state, bits, a.quantize_group_size))
            group = f", groups of {a.quantize_group_size}" if a.quantize_group_size else ""
            results.append({"attack": f"quantize:int{bits}", **run.metrics(quantized)})
            log.info("quantized to int%d%s", bits, group)
    if "probes" in a.attacks:
        for name in a.probes:
            rows = apply_probe(probes[name], run.forget.rows, run.forget.rows, a.seed)
            if rows is None:
                notes.append(f"probe {name} skipped: the forget rows have no paraphrased_question")
                continue
            # probes lengthen prompts (in-context examples): scored without cutting the answer off
            results.append(
                {"attack": f"probe:{name}", **run.metrics(model, forget_rows=rows, retain=False, length=PROBE_LENGTH)}
            )
    if "relearn" in a.attacks:
        results += _relearn(cfg, model, tokenizer, run, out, progress, notes)
    summary = {
        "kind": "robustness",
        "model": str(cfg.model.path),
        "references": references,
        "attacks": results,
        "rows": robustness_rows(results, references["unlearned"], references.get("target")),
        "notes": notes,
        "settings": dataclasses.asdict(a),
    }
    if "extract" in a.attacks:
        summary["extraction"] = sampled_extraction(
            model, tokenizer, run.template, run.forget.rows, a, run.options, run.length
        )
        if target is not None:
            summary["extraction_target"] = sampled_extraction(
                target, tokenizer, run.template, run.forget.rows, a, run.options, run.length
            )
    summary["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)  # checked writable at the start, made now the results exist
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(f"# Robustness of {cfg.model.path}\n\n{markdown(summary)}")
    plot({Path(str(cfg.model.path)).name: summary}, out / "robustness.png")
    return summary


class _Evaluator:
    """The forget and retain sets, evaluated the same way for every model and attack."""

    def __init__(self, cfg: RunConfig, tokenizer, progress: bool):
        self.tokenizer, self.progress = tokenizer, progress
        self.options = dataclasses.replace(cfg.eval, sets=["forget", "retain"], holdout_split="none")
        self.template = template_for(cfg.data.template, tokenizer)
        self.length, self.buckets, self.precision = (
            cfg.data.max_length,
            tuple(cfg.data.buckets),
            cfg.model.matmul_precision,
        )
        specs = {s.name: s for s in load_sets(cfg.data, self.options, cfg.continual.split)}
        self.forget, self.retain = specs["forget"], specs.get("retain")

    def metrics(self, model, forget_rows=None, retain: bool = True, length: int | None = None) -> dict:
        forget = self.forget if forget_rows is None else dataclasses.replace(self.forget, rows=forget_rows)
        specs = [forget, *([self.retain] if retain and self.retain is not None else [])]
        options = self.options
        if length is not None:
            options = dataclasses.replace(options, score_max_length=max(length, options.score_max_length or 0))
        _, summary = evaluate_model(
            model,
            self.tokenizer,
            self.template,
            specs,
            options,
            max(self.length, length or 0),
            self.buckets,
            self.precision,
            progress=self.progress,
        )
        out = {}
        for name, stats in summary["sets"].items():
            for key in ("probability", "rougeL_recall", "truth_ratio"):
                if stats.get(key) is not None:
                    out[f"{name}_{key}"] = stats[key]
        return out


def _relearn(cfg: RunConfig, model, tokenizer, run: _Evaluator, out: Path, progress: bool, notes: list) -> list[dict]:
    """Finetune the unlearned model on k rows (answer NLL), evaluating after each step count."""
    a = cfg.attack
    forget, retain = forget_and_retain(cfg)
    pool = forget if a.relearn_data == "forget" else retain
    if not pool:
        raise ConfigError(f"attack.relearn_data={a.relearn_data}, but the data has no {a.relearn_data} rows")
    rows = pool[-a.relearn_rows :]
    evaluated = {r["question"] for r in run.forget.rows[: cfg.eval.num_rows]}
    overlap = sum(r["question"] in evaluated for r in rows)
    if overlap:
        notes.append(f"relearning used {overlap} of the evaluated forget questions")
    training = TrainSection(
        lr=a.relearn_lr,
        batch_size=min(a.relearn_batch_size, len(rows)),
        max_steps=max(a.relearn_steps),
        warmup_steps=0,
        weight_decay=0.0,
        seed=a.seed,
    )
    results = []

    def after(step: int, get_model) -> None:
        if step in a.relearn_steps:
            name = f"relearn:{len(rows)} {a.relearn_data} rows, {step} steps"
            results.append({"attack": name, **run.metrics(get_model())})

    work = out / "relearn"
    work.mkdir(parents=True, exist_ok=True)
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))  # the step donates its state; the model is reused
    train(
        copy,
        tokenizer,
        finetune_streams(cfg, tokenizer, rows),
        build_objective("GD", retain_weight=1.0),
        work,
        training,
        cfg.mesh,
        OutputSection(export=False, checkpoint_minutes=None, keep_checkpoints=1),
        buckets=tuple(cfg.data.buckets),
        pad_to=cfg.data.pad_to,
        matmul_precision=cfg.model.matmul_precision,
        progress=progress,
        on_step=after,
    )
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # metrics.jsonl stays: the relearning curve
    return results
