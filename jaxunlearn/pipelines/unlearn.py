"""Python entry points: `unlearn`, `finetune` (both also run continual task lists)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from ..checkpoints.api import save_pretrained
from ..config import RunConfig
from ..data.templates import default_template_name
from ..objectives import build_objective
from ..parallel import initialize_distributed_from_env
from ..training.step import check_batch_divisible
from ..paths import check_writable_dir
from ..storage import home, remove_tree, written_locally
from .loading import load_for_run, warn_if_config_misfits, with_adapters
from .data_setup import finetune_rows, finetune_streams, forget_and_retain, padded_lengths, unlearning_streams
from ..training.loop import RUN_MARKER, check_param_precision, prepare_run_dir, train

log = logging.getLogger(__name__)


def _check_before_loading(cfg: RunConfig):
    """What fails fast: the precision policy, the mesh against the devices, the batch against
    the mesh. Returns the mesh, which the models are then loaded onto: each parameter is
    created on its sharding, never whole on one device (a Llama-3-8B would not fit there)."""
    if not cfg.lora.enabled:  # LoRA trains fp32 adapters: a bf16 base is the point
        check_param_precision(cfg.model.dtype, cfg.train.low_precision_params, warn=False)
    mesh = cfg.mesh.build()
    check_batch_divisible(cfg.train.batch_size, cfg.train.micro_batches, mesh)
    return mesh


def train_with_config(model, tokenizer, streams, objective, cfg: RunConfig, out_dir, **kwargs) -> dict:
    """training.loop.train with the run config's sections (train, mesh, output, the data's
    padded lengths, the model's precision and reference dtype)."""
    buckets, pad_to = padded_lengths(cfg, streams)
    return train(
        model,
        tokenizer,
        streams,
        objective,
        Path(out_dir),
        cfg.train,
        cfg.mesh,
        cfg.output,
        buckets=buckets,
        pad_to=pad_to,
        matmul_precision=cfg.model.matmul_precision,
        reference_dtype=cfg.model.reference_dtype,
        header={
            "model path": cfg.model.path,
            "template": cfg.data.template
            if cfg.data.template != "auto"
            else f"{default_template_name(tokenizer)} (auto)",
            "run directory": str(out_dir),
        },
        **kwargs,
    )


@contextlib.contextmanager
def run_directory(cfg: RunConfig, command: str, resume: bool, overwrite: bool):
    """Process 0 checks and prepares the run directory (the others wait for it) and yields
    it. run.json is written for a new run, never rewritten by --resume. If the run fails
    before any step finished, a directory this call created is removed, so the same command
    with the mistake fixed simply runs. A URL (output.dir=gs://...) is prepared where it is
    and the block gets a local staging folder copied up to it (storage.py)."""
    import jax
    from jax.experimental import multihost_utils

    initialize_distributed_from_env()
    where = cfg.output_dir(command)
    created = False
    if jax.process_index() == 0:  # alone: the others would list a URL while its probe object comes and goes
        check_writable_dir(where, "output.dir")
        created = not where.exists() or not any(where.iterdir())
        prepare_run_dir(where, resume, overwrite)
        created = created or (overwrite and not resume)
        if not (where / RUN_MARKER).exists():
            marker = {"command": command, "config": cfg.to_dict()}
            (where / RUN_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("jaxunlearn: run directory ready")
    try:
        with written_locally(where, cfg.output.staging_dir, pull=resume, push_on_failure=True) as out:
            yield out
    except BaseException:
        stepped = (where / "metrics.jsonl").exists() or any(where.glob("task_*/metrics.jsonl"))
        if created and not stepped and jax.process_index() == 0:
            remove_tree(where, ignore_errors=True)
        raise


def unlearn(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Unlearn per the config (a continual task list when continual.split is set). The
    objective, the model and tokenizer and the data are checked before the run directory
    is made."""
    initialize_distributed_from_env()  # before anything touches a JAX backend
    mesh = _check_before_loading(cfg)
    o = cfg.objective
    objective = build_objective(o.name, o.forget_weight, o.retain_weight, o.options)
    if cfg.continual.split:
        forget_and_retain(cfg, task_id=(cfg.continual.tasks or [1])[0])  # the pool exists and reads
    else:
        forget, retain = forget_and_retain(cfg)  # data errors before the model loads
    model, tokenizer = load_for_run(cfg, mesh=mesh)
    warn_if_config_misfits(cfg, tokenizer)
    model = with_adapters(cfg, model)
    if cfg.continual.split:
        with run_directory(cfg, "unlearn", resume, overwrite) as out:
            return _continual(cfg, objective, model, tokenizer, out, resume, progress, mesh)
    streams = unlearning_streams(cfg, tokenizer, objective, forget, retain)
    reference = None
    if objective.needs_reference and not cfg.lora.enabled:  # LoRA: the base with adapters off
        reference, _ = load_for_run(
            cfg,
            cfg.model.reference_path,
            cfg.model.reference_dtype or cfg.model.dtype,
            require_tokenizer=False,
            mesh=mesh,
        )
    with run_directory(cfg, "unlearn", resume, overwrite) as out:
        summary = train_with_config(
            model,
            tokenizer,
            streams,
            objective,
            cfg,
            out,
            reference=reference,
            resume=resume,
            progress=progress,
            on_step=_periodic_eval(cfg, tokenizer, out),
        )
        summary["best"] = _select_best(cfg, out)
        return summary


def _periodic_eval(cfg: RunConfig, tokenizer, out: Path):
    """Evaluate every eval.every_steps steps into out/eval/step_K: on the training mesh, by
    every process of a multi-host run alike (process 0 writes)."""
    every = cfg.eval.every_steps
    if not every:
        return None

    def on_step(step: int, get_model) -> None:
        if step % every == 0:
            from .evaluate import evaluate

            step_dir = out / "eval" / f"step_{step}"
            model = get_model()
            evaluate(cfg, model, tokenizer, out_dir=step_dir, progress=False)
            if cfg.eval.keep_models:
                save_pretrained(model, tokenizer, step_dir / "model", overwrite=True)

    return on_step


def _select_best(cfg: RunConfig, out: Path) -> dict | None:
    """best.json: the evaluated step best by eval.best_by (and its model, if kept)."""
    import jax

    if not cfg.eval.best_by or not cfg.eval.every_steps or jax.process_index() > 0:  # process 0 wrote them
        return None
    from ..evaluation.selection import pick_best, step_evaluations

    best = pick_best(step_evaluations(out), cfg.eval.best_by)
    model = Path(best["dir"]) / "model"
    best["model"] = str(home(model)) if model.exists() else None
    best["dir"] = str(home(best["dir"]))  # as kept: a URL's path when the run is staged
    (out / "best.json").write_text(json.dumps(best, indent=2) + "\n")
    log.info("best step by %s: %d (%s)", cfg.eval.best_by, best["step"], best["value"])
    return best


def _continual(cfg, objective, model, tokenizer, out: Path, resume: bool, progress: bool, mesh) -> dict:
    """Tasks one after another, each starting from the previous result; the reference is
    the previous result, or the original model with continual.fix_reference."""
    from ..data.sources import continual_task_ids

    tasks = cfg.continual.tasks or continual_task_ids(cfg.continual.split, cfg.data.data_dir)
    original = model
    results = []
    for i, task in enumerate(tasks):
        task_dir = out / f"task_{i + 1:02d}_id{task}"
        done = task_dir / "summary.json"
        if resume and done.exists():
            log.info("task %s already done; loading its result", task)
            model, _ = load_for_run(cfg, str(task_dir / "model"), mesh=mesh)
            results.append(json.loads(done.read_text()))
            continue
        task_dir.mkdir(parents=True, exist_ok=True)
        (task_dir / RUN_MARKER).write_text(json.dumps({"task": task, "order": tasks}) + "\n")
        reference = (original if cfg.continual.fix_reference else model) if objective.needs_reference else None
        if cfg.lora.enabled:  # the adapters carry over; the reference is the base with them off
            reference = None
        forget, retain = forget_and_retain(cfg, task_id=task, unlearned=tasks[: i + 1])
        streams = unlearning_streams(cfg, tokenizer, objective, forget, retain)
        summary = train_with_config(
            model,
            tokenizer,
            streams,
            objective,
            cfg,
            task_dir,
            reference=reference,
            resume=resume,
            progress=progress,
            export=True,
            fresh_if_no_checkpoint=True,  # a task not reached before the interruption starts now
        )
        model = summary.pop("model")
        summary.update(task=task, forget_rows=len(forget), retain_rows=len(retain))
        results.append(summary)
    report = {"tasks": results, "order": tasks}
    (out / "summary.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    report["model"] = model
    return report


def finetune(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Plain answer NLL on data.train_split / data.train_file (TOFU target or retain model)."""
    initialize_distributed_from_env()  # before anything touches a JAX backend
    mesh = _check_before_loading(cfg)
    objective = build_objective("GD", retain_weight=1.0)
    model, tokenizer = load_for_run(cfg, mesh=mesh)
    warn_if_config_misfits(cfg, tokenizer)
    streams = finetune_streams(cfg, tokenizer, finetune_rows(cfg))
    with run_directory(cfg, "finetune", resume, overwrite) as out:
        return train_with_config(model, tokenizer, streams, objective, cfg, out, resume=resume, progress=progress)
