"""The unlearning engine on a tiny random Llama with the real tokenizer and TOFU rows."""

from __future__ import annotations

import json
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxunlearn
from conftest import TINY_TRAIN
from jaxunlearn.config import load_config
from jaxunlearn.data import BatchIterator, pad_token_id
from jaxunlearn.errors import ConfigError, DataError
from jaxunlearn.objectives import StepBatch, build_objective
from jaxunlearn.pipelines.unlearn import finetune, train_with_config, unlearn
from jaxunlearn.pipelines.data_setup import forget_and_retain, unlearning_streams
from jaxunlearn.training.optimizer import linear_warmup_decay, make_optimizer, paper_num_steps, paper_warmup
from jaxunlearn.training.step import check_batch_divisible, init_state, make_train_step


def config(tiny_lm, tmp_path, *extra):
    return load_config(None, [f"model.path={tiny_lm}", f"output.dir={tmp_path / 'run'}", *TINY_TRAIN, *extra])


@jax.jit
def _stats(logits, labels, mask):
    """(forget next-token entropy over attended positions, answer token NLL)."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    ent = -(jnp.exp(logp) * logp).sum(-1)
    m = mask[:, 1:].astype(bool)
    targets = labels[:, 1:]
    sup = targets != -100
    tok = jnp.take_along_axis(logp, jnp.where(sup, targets, 0)[..., None], -1)[..., 0]
    return jnp.where(m, ent, 0).sum() / m.sum(), -jnp.where(sup, tok, 0).sum() / sup.sum()


def stream_stats(model, streams, name, tokenizer, n=16):
    it = BatchIterator({name: streams[name]}, n, seed=0, pad_id=pad_token_id(tokenizer), buckets=(128,), shuffle=False)
    b = it.batch_at(0)[name]
    logits = model(b["input_ids"], b["attention_mask"])
    return [float(x) for x in _stats(logits, b["labels"], b["attention_mask"])]


def test_paper_step_counts_and_schedule():
    assert [paper_num_steps(n, 5, 32) for n in (40, 200, 400)] == [6, 31, 62]
    assert paper_warmup(40, 32) == 0 and paper_warmup(400, 32) == 12
    sched = linear_warmup_decay(1e-5, total_steps=62, warmup_steps=12)
    assert float(sched(0)) == 0.0 and float(sched(6)) == pytest.approx(5e-6)
    assert float(sched(12)) == pytest.approx(1e-5) and float(sched(62)) == 0.0
    assert float(sched(37)) == pytest.approx(5e-6)


def test_weight_decay_skips_norms_and_biases(tiny_checkpoints):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_bias"))
    _, params = nnx.split(model)
    tx = make_optimizer(lambda c: 0.1, weight_decay=0.5)
    opt = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, opt, params)
    flat = {
        jax.tree_util.keystr(p): np.abs(np.asarray(u)).max()
        for p, u in jax.tree_util.tree_flatten_with_path(updates)[0]
    }
    assert all(v == 0 for k, v in flat.items() if "norm" in k or "bias" in k)
    assert all(v > 0 for k, v in flat.items() if "proj'" in k or "embed" in k)


def _one_step(model, streams, objective, micro, tokenizer, reference, group=None):
    graphdef, params = nnx.split(model)
    _, ref = nnx.split(reference)
    sched = linear_warmup_decay(1e-3, 10, 0)
    tx = make_optimizer(sched)
    step = jax.jit(make_train_step(graphdef, objective, tx, sched, micro_batches=micro, mean_group_rows=group))
    it = BatchIterator(streams, 8, seed=0, pad_id=pad_token_id(tokenizer), buckets=(128,))
    state, metrics = step(init_state(params, tx, 0), ref, StepBatch.from_arrays(jax.tree.map(jnp.asarray, next(it))))
    return state, metrics


@pytest.mark.parametrize("group", [None, 2], ids=["global_mean", "per_2_rows_mean"])
def test_gradient_accumulation_equals_full_batch(tiny_lm, tmp_path, group):
    cfg = config(tiny_lm, tmp_path)
    model, tok = jaxunlearn.load_pretrained(tiny_lm)
    objective = build_objective("NPO+GD", 1.0, 1.0)
    streams = unlearning_streams(cfg, tok, objective, *forget_and_retain(cfg))
    full, m_full = _one_step(model, streams, objective, 1, tok, model, group)
    acc, m_acc = _one_step(model, streams, objective, 4, tok, model, group)
    for k in ("loss", "loss/NPO", "loss/GD", "grad_norm"):
        assert float(m_acc[k]) == pytest.approx(float(m_full[k]), rel=1e-5), k
    # Adam's first step is ~lr * sign(g): allow 1% of a step for fp32 noise on tiny gradients
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(acc.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_ga_raises_forget_nll(tiny_lm, tmp_path):
    cfg = config(
        tiny_lm,
        tmp_path,
        "objective.name=GA",
        "objective.forget_weight=1",
        "train.max_steps=4",
        "train.warmup_steps=0",
        "output.export=false",
        "train.lr=3e-3",
    )
    model, tok = jaxunlearn.load_pretrained(tiny_lm)
    objective = build_objective("GA")
    streams = unlearning_streams(cfg, tok, objective, *forget_and_retain(cfg))
    before = stream_stats(model, streams, "forget", tok)[1]
    result = train_with_config(model, tok, streams, objective, cfg, tmp_path / "run", progress=False)
    after = stream_stats(result["model"], streams, "forget", tok)[1]
    assert after > before + 0.2, (before, after)
    ga = [json.loads(x)["loss/GA"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert ga[-1] < ga[0]  # -NLL of the training batches falls too


def test_me_gd_raises_entropy_and_keeps_retain(tiny_lm, tmp_path):
    cfg = config(
        tiny_lm,
        tmp_path,
        "objective.name=ME+GD",
        "objective.forget_weight=1",
        "train.max_steps=6",
        "train.warmup_steps=0",
        "output.export=false",
        "train.lr=3e-3",
    )
    model, tok = jaxunlearn.load_pretrained(tiny_lm)
    objective = build_objective("ME+GD", 1.0, 1.0)
    streams = unlearning_streams(cfg, tok, objective, *forget_and_retain(cfg))
    ent0, _ = stream_stats(model, streams, "forget", tok)
    _, ret0 = stream_stats(model, streams, "retain", tok)
    result = train_with_config(model, tok, streams, objective, cfg, tmp_path / "run", progress=False)
    ent1, _ = stream_stats(result["model"], streams, "forget", tok)
    _, ret1 = stream_stats(result["model"], streams, "retain", tok)
    assert ent1 > ent0 + 0.5, (ent0, ent1)
    assert ret1 <= 1.1 * ret0, (ret0, ret1)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 7))
    assert {"loss", "loss/ME", "loss/GD", "grad_norm", "lr", "tokens_per_s"} <= set(lines[0])


def test_a_run_that_keeps_nothing_is_refused(tiny_lm, tmp_path):
    with pytest.raises(ConfigError, match="keeps nothing of the trained model"):
        config(tiny_lm, tmp_path, "output.final_checkpoint=false", "output.export=false")


def test_unlearn_api_writes_run_and_export(tiny_lm, tmp_path):
    cfg = config(
        tiny_lm,
        tmp_path,
        "objective.name=IDK+AP",
        "train.max_steps=2",
        "output.export_hf_flax=true",
        "train.profile_steps=2..2",
        "output.final_checkpoint=false",  # the export is all it keeps
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = unlearn(cfg, progress=False)
    deprecated = [  # jaxunlearn calls no API that jax, flax or optax deprecate
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning) and any(f"/{m}/" in w.filename for m in ("jax", "flax", "optax"))
    ]
    assert not deprecated, deprecated
    out = tmp_path / "run"
    assert list((out / "profile").rglob("*.xplane.pb"))  # the trace of step 2
    assert (out / "run.json").exists() and (out / "summary.json").exists()
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()
    assert (out / "model-hf-flax" / "flax_model.msgpack").exists()
    assert not list((out / "checkpoints").glob("*")), "output.final_checkpoint=false wrote a checkpoint"
    reloaded, _ = jaxunlearn.load_pretrained(out / "model")
    a = jax.tree.leaves(nnx.split(summary["model"])[1])
    b = jax.tree.leaves(nnx.split(reloaded)[1])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(ConfigError, match="already holds a run"):
        unlearn(cfg, progress=False)


def test_precomputed_reference_matches_live_reference(tiny_lm, tmp_path):
    losses = []
    for pre in ("false", "true"):
        cfg = config(
            tiny_lm,
            tmp_path / pre,
            "objective.name=NPO",
            "train.max_steps=2",
            "output.export=false",
            f"train.precompute_reference={pre}",
        )
        unlearn(cfg, progress=False)
        lines = (tmp_path / pre / "run" / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(x)["loss"] for x in lines])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_finetune_lowers_nll(tiny_lm, tmp_path):
    cfg = config(
        tiny_lm,
        tmp_path,
        "data.train_split=forget01",
        "train.max_steps=4",
        "train.warmup_steps=0",
        "output.export=false",
    )
    summary = finetune(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss/GD"] < lines[0]["loss/GD"]
    assert summary["rows"] == 40


def test_continual_tasks_chain(tiny_lm, tmp_path, gcs_bucket):
    """Two tasks in a chain, written to gs:// (a GCS emulator): the tasks'
    files are staged and copied up, their checkpoints written at the URL by Orbax."""
    from jaxunlearn.storage import remote_files, remote_path

    cfg = config(
        tiny_lm,
        tmp_path,
        f"output.dir={gcs_bucket}/continual",
        "data.source=closer_look",
        "continual.split=forget01",
        "continual.tasks=[1,2]",
        "objective.name=GA",
        "train.max_steps=1",
        "data.max_retain_rows=40",
    )
    report = unlearn(cfg, progress=False)
    tasks = report["tasks"]
    assert [t["task"] for t in tasks] == [1, 2] and all(t["forget_rows"] == 40 for t in tasks)
    files = remote_files(remote_path(f"{gcs_bucket}/continual"))
    assert {"summary.json", "task_02_id2/model/model.safetensors", "task_02_id2/summary.json"} <= set(files)
    assert any(f.startswith("task_01_id1/checkpoints/1/") for f in files) and not (tmp_path / "run").exists()


# --- bad input ----------------------------------------------------------------------------


def test_objective_needing_a_stream_the_data_lacks(tiny_lm, tmp_path):
    forget = tmp_path / "forget.jsonl"
    forget.write_text('{"question": "Who?", "answer": "Me."}\n')
    cfg = config(tiny_lm, tmp_path, "data.source=files", f"data.forget_file={forget}", "objective.name=ME+GD")
    with pytest.raises(DataError, match="needs the stream.*retain.*no retain set"):
        unlearn(cfg, progress=False)


def test_reference_objective_without_reference(tiny_lm, tmp_path):
    cfg = config(tiny_lm, tmp_path, "objective.name=NPO+GD")
    model, tok = jaxunlearn.load_pretrained(tiny_lm)
    objective = build_objective("NPO+GD")
    streams = unlearning_streams(cfg, tok, objective, *forget_and_retain(cfg))
    with pytest.raises(ConfigError, match="needs a frozen reference model"):
        train_with_config(model, tok, streams, objective, cfg, tmp_path / "run", reference=None, progress=False)


def test_batch_the_mesh_cannot_divide():
    mesh = types.SimpleNamespace(shape={"data": 4, "fsdp": 2, "tensor": 1})
    with pytest.raises(ConfigError, match="cannot be split over data x fsdp = 8"):
        check_batch_divisible(12, 1, mesh)
    check_batch_divisible(32, 2, mesh)  # 16 per micro-batch: fine
    with pytest.raises(ConfigError, match="multiple of 16"):
        check_batch_divisible(8, 2, mesh)


def test_unknown_config_key_names_closest():
    with pytest.raises(ConfigError, match="did you mean 'train.micro_batches'"):
        load_config(None, ["train.micro_batch=4"])
    with pytest.raises(ConfigError, match="did you mean 'kl_to_uniform'"):
        load_config(None, ["objective.options.me_direction=kl_to_uniform_"])


def test_periodic_evaluation_inside_unlearning(tiny_lm, tmp_path):
    cfg = config(
        tiny_lm,
        tmp_path,
        "objective.name=GA",
        "train.max_steps=2",
        "output.export=false",
        "eval.every_steps=1",
        "eval.num_rows=2",
        "eval.generate=false",
        "eval.sets=[forget]",
        "eval.holdout_split=none",
    )
    unlearn(cfg, progress=False)
    probs = [
        json.loads((tmp_path / "run" / "eval" / f"step_{k}" / "summary.json").read_text())["sets"]["forget"][
            "probability"
        ]
        for k in (1, 2)
    ]
    assert probs[1] < probs[0]  # gradient ascent lowers the forget answers' probability


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_lm, tmp_path):
    from jaxunlearn.training.loop import TrainingError

    cfg = config(
        tiny_lm,
        tmp_path,
        "objective.name=GA",
        "objective.forget_weight=1",
        "train.max_steps=6",
        "train.warmup_steps=0",
        "train.lr=1e30",
        "output.checkpoint_every=1",
        "output.export=false",
    )
    with pytest.raises(
        TrainingError, match=r"non-finite loss or gradient at step (\d).*last finite state is checkpointed: step"
    ):
        unlearn(cfg, progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] == len(lines)  # every finite step checkpointed, the bad one not


def test_training_and_evaluation_run_at_the_configured_matmul_precision(tiny_lm, tmp_path, monkeypatch):
    import jaxunlearn.evaluation.evaluate as evaluate_module
    import jaxunlearn.training.loop as loop_module

    seen = []

    def spy(name, real):
        def wrapped(*args, **kwargs):
            seen.append((name, jax.config.jax_default_matmul_precision))
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(loop_module, "jit_train_step", spy("train", loop_module.jit_train_step))
    monkeypatch.setattr(evaluate_module, "score_candidates", spy("eval", evaluate_module.score_candidates))
    common = [
        "objective.name=GA",
        "train.max_steps=1",
        "output.export=false",
        "eval.every_steps=1",
        "eval.num_rows=2",
        "eval.generate=false",
        "eval.sets=[forget]",
        "eval.holdout_split=none",
    ]
    unlearn(config(tiny_lm, tmp_path, *common), progress=False)  # fp32 compute: auto = highest
    unlearn(config(tiny_lm, tmp_path, *common, "model.matmul_precision=high"), overwrite=True, progress=False)
    assert seen == [("train", "highest"), ("eval", "highest"), ("train", "high"), ("eval", "high")]


@pytest.mark.parametrize("window", ["3..1", "0..2", "2:2", "two"])
def test_profile_window_must_be_n_to_m(tiny_lm, tmp_path, window):
    with pytest.raises(ConfigError, match="write N..M with 1 <= N <= M"):
        config(tiny_lm, tmp_path, f"train.profile_steps={window}")


def test_cli_keeps_compiled_steps_in_the_compilation_cache(tiny_lm, tmp_path):
    from conftest import run_python

    code = (
        "import sys, jaxunlearn.compilation_cache as c; c.MIN_COMPILE_SECONDS = 0; "
        "from jaxunlearn.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["generate", str(tiny_lm), "--prompt", "hi", "--max-new-tokens", "2"]
    cache = tmp_path / "xla"
    assert run_python(code, "--compilation-cache", str(cache), *args).returncode == 0
    entries = sorted(p.name for p in cache.iterdir())
    assert entries  # compiled executables on disk
    assert run_python(code, "--compilation-cache", str(cache), *args).returncode == 0
    assert sorted(p.name for p in cache.iterdir()) == entries  # the second run found them: nothing new


def test_compilation_cache_location_and_off(tmp_path, monkeypatch):
    from jaxunlearn import compilation_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    assert compilation_cache.default_location() == str(tmp_path / "home" / "jaxunlearn" / "xla")
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "mine"))
    assert compilation_cache.default_location() == str(tmp_path / "mine")
    assert compilation_cache.enable("off") is None and not (tmp_path / "mine").exists()  # off: nothing made


def test_profiler_traces_the_rest_of_a_window_a_resumed_run_starts_in(tmp_path):
    from jaxunlearn.training.profiling import StepProfiler

    p = StepProfiler("2..3", tmp_path / "profile")
    p.before(1)
    assert not p.active  # before the window
    p.before(3)  # resumed at step 3
    assert p.active
    p.after(3, jnp.ones(2))
    assert not p.active and list((tmp_path / "profile").rglob("*.xplane.pb"))
    p.before(3)
    assert not p.active  # one trace per run
