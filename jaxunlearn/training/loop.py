"""The training loop shared by unlearning, finetuning and continual unlearning.

Imperative shell around the jitted step: data iterator, progress bar, metrics JSON Lines,
Orbax checkpoints, resume, non-finite stop, and the export at the end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ..checkpoints.api import remove_orphan_temporaries, save_pretrained
from ..checkpoints.peft import save_peft_adapters
from ..data import BatchIterator, pad_rows, pad_token_id
from ..data.batching import DEFAULT_BUCKETS, bucket_length
from ..errors import ConfigError, Interrupted, JaxUnlearnError
from ..models.config import to_dtype
from ..models.lora import adapters_off, split_adapters
from ..objectives import Objective, StepBatch
from ..parallel import MeshSection
from ..precision import matmul_precision as precision_context
from ..storage import home, is_remote, push_if_staged, remove_tree
from .checkpointing import Checkpointer
from .config import OutputSection, TrainSection
from .optimizer import SCHEDULES, make_optimizer, paper_num_steps, paper_warmup
from .prefetch import Prefetcher
from .profiling import StepProfiler
from .step import (
    batch_sharding,
    check_batch_divisible,
    jit_train_step,
    make_train_step,
    place_batch,
    place_params,
    sequence_nll,
    sharded_init_state,
)

log = logging.getLogger(__name__)
RUN_MARKER = "run.json"


class TrainingError(JaxUnlearnError):
    """Training stopped (e.g. a non-finite loss)."""


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> Path:
    """Refuse to write over another run unless resuming it or told to overwrite. `out` may
    be a URL (storage.py)."""
    out = out if is_remote(out) else Path(out)
    if out.exists() and any(out.iterdir()):
        if resume:
            if not (out / RUN_MARKER).exists():
                raise ConfigError(f"--resume: {out} holds no jaxunlearn run ({RUN_MARKER} missing)")
            return out
        if not overwrite:
            raise ConfigError(
                f"output directory {out} already holds a run; pass --resume to continue it or --overwrite to "
                "replace it (or choose another output.dir)"
            )
        remove_tree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


LOW_PRECISION = ("bfloat16", "float16")


def check_param_precision(param_dtype, low_precision_params: bool, warn: bool = True) -> None:
    """Refuse to train bf16 / fp16 parameters unless asked: at TOFU's lr of 1e-5 most updates
    are below half a bf16 ulp of their weight and round away (over 62 steps about 6% of
    N(0, 0.02) weights ever change). Opted in, warn (once: `train` warns, the pipelines'
    early check before loading passes warn=False)."""
    name = jnp.dtype(to_dtype(param_dtype)).name
    if name not in LOW_PRECISION:
        return
    if not low_precision_params:
        raise ConfigError(
            f"the policy's parameters are {name}: at small learning rates most {name} updates round away and the "
            f"model barely trains. Use mixed precision (model.dtype=float32 model.compute_dtype={name}: fp32 "
            f"parameters and AdamW state, {name} compute), or opt in with train.low_precision_params=true"
        )
    if not warn:
        return
    log.warning(
        "training %s parameters (train.low_precision_params): updates smaller than half a %s ulp of "
        "their weight round away; prefer model.dtype=float32 model.compute_dtype=%s",
        name,
        name,
        name,
    )


def _cast(params, dtype_name: str | None):
    if not dtype_name:
        return params
    dt = to_dtype(dtype_name)
    return jax.tree.map(lambda x: x.astype(dt), params)


def precompute_reference_nll(graphdef, ref_params, streams, objective: Objective, buckets, pad_to, pad_id):
    """seqNLL of the reference for every row of the streams the objective's reference reads
    (terms declaring precomputable_reference, such as NPO and DPO), computed once."""
    if not objective.precomputable_reference:
        raise ConfigError(
            f"train.precompute_reference needs terms whose reference part is a sequence NLL (NPO, DPO); "
            f"{objective.name} needs full reference outputs every step"
        )
    out = {}
    for s in objective.ref_streams:
        rows, values = streams[s], []
        for start in range(0, len(rows), 16):
            index = list(range(start, min(start + 16, len(rows))))
            index += [index[-1]] * (16 - len(index))  # one shape per bucket
            length = bucket_length(int(rows.lengths()[index].max()), tuple(buckets), pad_to)
            b = pad_rows(rows, index, length, pad_id)
            nll = sequence_nll(graphdef, ref_params, b["input_ids"], b["attention_mask"], b["labels"])
            values.append(np.asarray(nll)[: min(16, len(rows) - start)])
        out[s] = np.concatenate(values).astype(np.float32)
    return out


def term_precomputations(graphdef, reference_state, streams, objective: Objective, buckets, pad_to, pad_id):
    """({key: per-row array}, names of the terms served) from the terms' `precompute` hooks,
    each given a forward of the reference over a stream's rows (batches of 16)."""

    def forward(stream):
        rows = streams[stream]
        for start in range(0, len(rows), 16):
            index = list(range(start, min(start + 16, len(rows))))
            real = len(index)
            index += [index[-1]] * (16 - real)  # one shape per bucket
            length = bucket_length(int(rows.lengths()[index].max()), tuple(buckets), pad_to)
            b = pad_rows(rows, index, length, pad_id)
            out = _hidden_forward(graphdef, reference_state, b["input_ids"], b["attention_mask"])
            yield jax.tree.map(lambda x: x[:real] if x.ndim < 4 else x[:, :real], out), b["labels"][:real]

    values, served = {}, set()
    for term, _ in objective.terms:
        if term.precompute is not None:
            got = term.precompute(forward, streams, objective.options)
            if got:
                values.update(got)
                served.add(term.name)
    return values, served


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _hidden_forward(graphdef, state, ids, mask):
    from ..objectives import StreamOutputs

    model = nnx.merge(graphdef, *state) if isinstance(state, tuple) else nnx.merge(graphdef, state)
    out = model.forward(ids, mask, output_hidden_states=True)
    return StreamOutputs(out.logits, out.hidden_states)


def train(
    model,
    tokenizer,
    streams,
    objective: Objective,
    out_dir: Path,
    training: TrainSection,
    mesh: MeshSection | None = None,
    output: OutputSection | None = None,
    buckets: tuple[int, ...] = DEFAULT_BUCKETS,
    pad_to: int | None = None,
    matmul_precision: str = "auto",
    reference_dtype: str | None = None,
    reference=None,
    resume: bool = False,
    progress: bool = True,
    export: bool | None = None,
    on_step=None,
    fresh_if_no_checkpoint: bool = False,
    header: dict | None = None,
) -> dict:
    """Run the configured number of steps of `objective` and export the result.

    `model` is the policy's starting point (an NNX model); `reference` the frozen model
    for the terms that need one (cast to `reference_dtype`); `training`, `mesh` and
    `output` are the run config's sections; `buckets` / `pad_to` the padded lengths a batch
    may take; `on_step(step, model)`, if given, runs after each step (periodic evaluation).
    Matmuls run at `matmul_precision` (auto: highest for fp32 compute). `resume` continues
    from the latest checkpoint in out_dir, and stops with a message when there is none
    unless `fresh_if_no_checkpoint`. `header` adds lines (model path, template) to the block
    printed at start. SIGINT / SIGTERM stop the run after the step in flight, with a
    checkpoint of it (a second SIGINT stops at once). Returns a summary with the final
    model under "model".
    """
    if model.config.lora is None:  # LoRA trains fp32 adapters whatever the base's dtype
        check_param_precision(model.config.param_dtype, training.low_precision_params)
    run = SimpleNamespace(  # everything the loop reads besides the model, data and objective
        train=training,
        mesh=mesh or MeshSection(),
        output=output or OutputSection(),
        buckets=tuple(buckets),
        pad_to=pad_to,
        reference_dtype=reference_dtype,
        reference=reference,
        resume=resume,
        progress=progress,
        export=export,
        on_step=on_step,
        fresh_if_no_checkpoint=fresh_if_no_checkpoint,
        header=header or {},
    )
    with precision_context(matmul_precision, to_dtype(model.config.compute_dtype)):
        return _train(model, tokenizer, streams, objective, Path(out_dir), run)


def _merge(graphdef, params, base):
    """The model from the trained state (and, in LoRA mode, the frozen base)."""
    return nnx.merge(graphdef, params) if base is None else nnx.merge(graphdef, params, base)


def _stop_non_finite(checkpointer, state, data_before: dict, step: int, metrics: dict):
    """The step left the state unchanged: keep it (the last finite state, after `step`
    steps) as a checkpoint, then stop with where it is."""
    if step > 0:
        checkpointer.save(step, state, {"data": data_before, "step": step})
    checkpointer.wait()
    good = checkpointer.latest_step()
    where = f"step {good} in {checkpointer.directory}" if good is not None else "none (it failed at the first step)"
    raise TrainingError(
        f"non-finite loss or gradient at step {step + 1} (loss={metrics['loss']}); stopped. The last finite "
        f"state is checkpointed: {where} (--resume continues from it). Lower train.lr or set train.clip_grad_norm"
    )


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """A resumed run logs from its checkpoint's step on: drop the lines of later steps."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))


class _StopRequest:
    """Set by SIGINT / SIGTERM while the loop runs; the loop checkpoints and stops after the
    step in flight. A second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self):
        self.signal_number = None

    def __call__(self, signum, frame):
        if self.signal_number == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to stop now)",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _stop_on_signals():
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():  # handlers only install there
        yield request
        return
    old = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class _Ballot:
    """Stop and timed-save decisions every process takes alike (saves are collective) with
    no host collective per step: each step carries this process's flags (a signal came, a
    timed checkpoint is due) in its rows of a votes array, and the step's metrics hold the
    maximum over all rows. Whatever step's metrics the loop has read last decides, and every
    process reads the same steps' metrics at the same point."""

    def __init__(self, mesh, global_rows: int):
        self.sharding = batch_sharding(mesh)
        self.rows = global_rows // jax.process_count()
        self.stop = self.time_due = False
        self.voted_at = self.saved_at = -1

    def cast(self, signalled: bool, time_due: bool):
        flags = np.asarray([signalled, time_due], np.int32)
        return jax.make_array_from_process_local_data(self.sharding, np.tile(flags, (self.rows, 1)))

    def count(self, step: int, votes) -> None:
        self.voted_at, self.stop, self.time_due = step, bool(votes[0]), bool(votes[1])

    def decide(self) -> tuple[bool, bool]:
        """(stop, timed save); a timed vote cast before the last save is spent."""
        return self.stop, self.time_due and self.voted_at > self.saved_at


def _startup_lines(model, objective, streams, run, total: int, warmup: int, mesh) -> list[str]:
    c, t, o = model.config, run.train, run.output
    rows = ", ".join(f"{name} {len(rows)}" for name, rows in streams.items())
    saves = [f"every {o.checkpoint_every} steps"] if o.checkpoint_every else []
    saves += [f"every {o.checkpoint_minutes:g} min"] if o.checkpoint_minutes else []
    lines = [f"{key}: {value}" for key, value in run.header.items()]
    lines += [
        f"model: {c.model_type}, {c.num_layers} layers, parameters {c.param_dtype}, compute {c.compute_dtype}",
        f"objective: {objective.name}; rows: {rows}",
        f"steps: {total} (warmup {warmup}), lr {t.lr:g}, batch {t.batch_size} x {t.micro_batches} micro",
        f"mesh: {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s)",
        f"checkpoints: {', '.join(saves + (['at the end'] if o.final_checkpoint else [])) or 'none'}, "
        f"keep {o.keep_checkpoints}",
    ]
    return lines


def _train(model, tokenizer, streams, objective, out_dir: Path, run: SimpleNamespace):
    reference, resume, progress, export, on_step = run.reference, run.resume, run.progress, run.export, run.on_step
    t = run.train
    out_dir = Path(out_dir)
    mesh = run.mesh.build()
    check_batch_divisible(t.batch_size, t.micro_batches, mesh)
    missing = [s for s in objective.streams if s not in streams]
    if missing:
        raise ConfigError(f"objective {objective.name} needs the stream(s) {missing}, which the data lacks")
    lora = model.config.lora is not None
    if lora and reference is not None:
        raise ConfigError("in LoRA mode the reference is the base model with the adapters off; pass no reference model")
    if objective.needs_reference and reference is None and not lora:
        raise ConfigError(
            f"objective {objective.name} needs a frozen reference model, but none was given "
            "(model.reference_path, or reference= in the Python API)"
        )

    base = None
    if lora:  # the state trains the adapters; the frozen base rides as the step's second argument
        graphdef, params, base = split_adapters(model)
        base = place_params(base, mesh)
    else:
        graphdef, params = nnx.split(model)
    params = place_params(params, mesh)
    ref_params = base
    if objective.needs_reference and not lora:
        _, ref_params = nnx.split(reference)
        ref_params = place_params(_cast(ref_params, run.reference_dtype), mesh)

    n = len(next(iter(streams.values())))
    total = t.max_steps or paper_num_steps(n, t.epochs, t.batch_size)
    warmup = t.warmup_steps if t.warmup_steps is not None else paper_warmup(n, t.batch_size)
    schedule = SCHEDULES[t.schedule](t.lr, total, warmup)
    tx = make_optimizer(schedule, t.weight_decay, t.adam_b1, t.adam_b2, t.adam_eps, t.clip_grad_norm)
    mask = objective.trainable_mask(params, model.config.num_layers)

    pad_id = pad_token_id(tokenizer)
    iterator = BatchIterator(
        streams,
        t.batch_size,
        t.seed,
        pad_id,
        run.buckets,
        run.pad_to,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    precomputed = None
    reference_state = (adapters_off(params), base) if lora else ref_params
    if t.precompute_reference and objective.needs_reference:
        precomputed = precompute_reference_nll(
            graphdef, reference_state, streams, objective, run.buckets, run.pad_to, pad_id
        )
    once, served = term_precomputations(graphdef, reference_state, streams, objective, run.buckets, run.pad_to, pad_id)
    if once:  # values terms compute once per run (DIST's centroid), kept beside the run for inspection
        precomputed = {**(precomputed or {}), **once}
        if jax.process_index() == 0:
            for key, value in once.items():
                np.save(out_dir / f"{key}.npy", value[0] if np.all(value == value[:1]) else value)
    users = {term.name for term, _ in objective.terms if term.needs_reference}
    use_reference = not ((t.precompute_reference and objective.precomputable_reference) or (users and users <= served))
    if not use_reference:
        ref_params = base  # None, or LoRA's frozen base (the policy's too)

    state = sharded_init_state(params, tx, t.seed, mesh)
    for name in ("model", "model-hf-flax"):  # exports a killed run left half-written
        remove_orphan_temporaries(out_dir, name)
    checkpointer = Checkpointer(
        out_dir / "checkpoints",
        keep=run.output.keep_checkpoints,
        every=run.output.checkpoint_every,
        minutes=run.output.checkpoint_minutes,
        final=run.output.final_checkpoint,
    )
    if resume and checkpointer.latest_step() is None and not run.fresh_if_no_checkpoint:
        checkpointer.close()
        raise ConfigError(
            f"--resume: {home(out_dir)} holds no checkpoint to continue from; run again without --resume and with "
            "--overwrite to start it afresh"
        )
    if resume and checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore_latest_readable(state)
        _keep_metrics_up_to(out_dir / "metrics.jsonl", int(state.step))
        iterator.load_state_dict(meta["data"])
        log.info("resumed from step %d", int(state.step))
    start = int(state.step)

    compute = to_dtype(model.config.compute_dtype)
    mixed = jnp.dtype(compute) != jnp.dtype(to_dtype(model.config.param_dtype))
    step_fn = make_train_step(
        graphdef,
        objective,
        tx,
        schedule,
        t.micro_batches,
        mask,
        use_reference=use_reference,
        mean_group_rows=t.loss_group_rows,
        compute_dtype=compute if mixed else None,
        param_shardings_tree=jax.tree.map(lambda x: x.sharding, state.params),
        lora=lora,
        dropout=lora and model.config.lora.dropout > 0,
        vocab_block=t.vocab_block,
    )
    jitted = jit_train_step(step_fn, state, ref_params, mesh, gated=True)
    is_main = jax.process_index() == 0
    if run.progress and is_main:
        print("\n".join(_startup_lines(model, objective, streams, run, total, warmup, mesh)), file=sys.stderr)
    metrics_path = out_dir / "metrics.jsonl"
    bar = tqdm(
        total=total,
        initial=start,
        desc=f"{objective.name} (compiling)",
        unit="step",
        dynamic_ncols=True,
        disable=not (progress and is_main),
    )
    tokens_done, t0 = 0, time.perf_counter()
    last = {}
    profiler = StepProfiler(t.profile_steps, out_dir / "profile")
    prefetch = Prefetcher(iterator, total)
    halted = jax.device_put(jnp.zeros((), bool), NamedSharding(mesh, PartitionSpec()))
    ballot = _Ballot(mesh, t.batch_size)
    pending = None  # the step dispatched last whose metrics are not read yet
    t_read = time.perf_counter()

    def read(p):
        """The host reads a step's metrics: log line, bar, non-finite stop. Runs one step late
        (after the next step was dispatched) unless that step must be decided on now."""
        nonlocal tokens_done, last, t_read
        metrics = jax.device_get(p["metrics"])
        ballot.count(p["step"], metrics.pop("votes"))
        metrics = {k: v.item() for k, v in metrics.items()}
        now = time.perf_counter()
        t_step, t_read = now - t_read, now
        if p["step"] == start:
            bar.set_description(objective.name)
        if not metrics["finite"]:  # the state is the last finite one: the gated next step changed nothing
            _stop_non_finite(checkpointer, state, p["data_before"], p["step"], metrics)
        tokens_done += metrics.pop("tokens")
        elapsed = now - t0
        last = {
            "step": p["step"] + 1,
            **{k: v for k, v in metrics.items() if k not in ("finite", "halted")},
            "step_seconds": t_step,
            "tokens_per_s": tokens_done / max(elapsed, 1e-9),
            "epoch": iterator.epoch_of(p["step"] + 1),
        }
        if is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(last) + "\n")
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
        bar.update(1)

    try:
        with _stop_on_signals() as stop:
            for step in range(start, total):
                data_before = iterator.state_dict()
                index, arrays = prefetch.get(step)
                iterator.step = step + 1
                reference_nll = {}
                if precomputed is not None:
                    per = t.batch_size // jax.process_count()
                    local = index[jax.process_index() * per : (jax.process_index() + 1) * per]
                    reference_nll = {s: v[local] for s, v in precomputed.items()}
                batch = StepBatch.from_arrays(arrays, reference_nll)
                profiler.before(step + 1)
                votes = ballot.cast(stop.signal_number is not None, checkpointer.time_due())
                with jax.set_mesh(mesh):  # activation sharding constraints (parallel.constrain_batch)
                    state, metrics = jitted(state, ref_params, place_batch(batch, mesh), halted, votes)
                halted = metrics["halted"]  # a device value: a non-finite step turns the next ones into no-ops
                profiler.after(step + 1, state)
                if pending is not None:
                    read(pending)
                pending = {"step": step, "metrics": metrics, "data_before": data_before}
                scheduled = checkpointer.should_save(step + 1, last=step + 1 == total)
                if scheduled or on_step is not None or step + 1 == total:
                    read(pending)  # decisions on this step's state need its metrics first
                    pending = None
                stopping, time_due = ballot.decide()  # the votes of the last step read
                saving = scheduled or time_due or stopping
                if saving and pending is not None:
                    read(pending)
                    pending = None
                if saving:
                    checkpointer.save(step + 1, state, {"data": iterator.state_dict(), "step": step + 1})
                    push_if_staged(out_dir)  # a URL's metrics as far as its checkpoints (storage.py)
                    ballot.saved_at = step
                if stopping:
                    checkpointer.wait()
                    signum = stop.signal_number or signal.SIGTERM  # another process got the signal
                    raise Interrupted(
                        f"{signal.Signals(signum).name} after step {step + 1} of {total}: checkpoint saved in "
                        f"{checkpointer.directory}; continue with the same command and --resume",
                        int(signum),
                    )
                if on_step is not None:
                    on_step(step + 1, lambda: _merge(graphdef, state.params, base))
    finally:
        prefetch.close()
        profiler.close()
        bar.close()
        checkpointer.close()

    # the result stays sharded; the exports fetch one tensor at a time (collectives with
    # several processes, so every process runs them and process 0 writes)
    final = _merge(graphdef, state.params, base)
    summary = {"steps": total, "warmup_steps": warmup, "rows": n, "final": last, "out_dir": str(home(out_dir))}
    if run.output.export if export is None else export:  # paths as they will be kept: a URL's, when staged
        summary["export"] = str(home(save_pretrained(final, tokenizer, out_dir / "model", overwrite=True)))
        if lora and run.output.export_peft:
            adapter = save_peft_adapters(final, out_dir / "adapter", run.header.get("model path"))
            summary["export_peft"] = str(home(adapter))
        if run.output.export_hf_flax:
            hf_flax = save_pretrained(final, tokenizer, out_dir / "model-hf-flax", format="hf-flax", overwrite=True)
            summary["export_hf_flax"] = str(home(hf_flax))
    if is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["model"] = final
    return summary
