"""Work is kept (issue 17, part 2): SIGINT / SIGTERM checkpoint the last finished step, a
non-finite stop keeps the last finite state, a damaged latest checkpoint falls back to the
previous one, orphaned temporaries of a killed run go away, time-based checkpoints."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest

from conftest import TINY_TRAIN
from jaxunlearn.config import load_config
from jaxunlearn.errors import CheckpointError, Interrupted
from jaxunlearn.training.loop import TrainingError

COMMON = ["objective.name=GA", "output.export=false", "train.warmup_steps=0", "output.checkpoint_minutes=null"]


def _config(tiny_lm, out, *extra):
    return load_config(None, [f"model.path={tiny_lm}", f"output.dir={out}", *TINY_TRAIN, *COMMON, *extra])


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(out):
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


def _unlearn_with_hook(cfg, on_step, resume=False):
    """The unlearn pipeline with a hook after each step (to send a signal mid-run)."""
    from jaxunlearn.pipelines import unlearn as api

    original = api._periodic_eval
    api._periodic_eval = lambda *a: on_step
    try:
        return api.unlearn(cfg, resume=resume, progress=False)
    finally:
        api._periodic_eval = original


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_last_finished_step_and_resume_finishes(tiny_lm, tmp_path, signum):
    out = tmp_path / "run"
    cfg = _config(tiny_lm, out, "train.max_steps=5")

    def send(step, _model):
        if step == 2:
            os.kill(os.getpid(), signum)

    with pytest.raises(Interrupted, match=f"{signal.Signals(signum).name} after step 3 of 5.*--resume") as e:
        _unlearn_with_hook(cfg, send)
    assert e.value.exit_code == 128 + signum
    assert _checkpoints(out) == [3]  # the step in flight finished and was saved (async save completed)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    summary = _unlearn_with_hook(cfg, None, resume=True)
    assert summary["final"]["step"] == 5 and _steps(out) == [1, 2, 3, 4, 5]


def test_a_non_finite_stop_keeps_the_last_finite_state(tiny_lm, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tiny_lm, out, "train.max_steps=6", "train.lr=1e30")  # step 2's loss overflows
    with pytest.raises(TrainingError, match=r"non-finite .* at step (\d).*checkpointed: step \d") as e:
        _unlearn_with_hook(cfg, None)
    failed = int(str(e.value).split("at step ")[1].split()[0])
    assert failed >= 2 and _checkpoints(out) == [failed - 1]
    assert f"checkpointed: step {failed - 1}" in str(e.value)


# Orbax's failed restore of the cut files can leave a read in flight whose completion lands
# on its already closed event loop ("Event loop is closed", raised in no frame of ours); it
# showed in 3 of 7 suite runs, and the fallback asserted here is unaffected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_latest_checkpoint_falls_back_and_orphans_are_removed(tiny_lm, tmp_path, caplog):
    out = tmp_path / "run"
    extra = ["output.checkpoint_every=2", "output.keep_checkpoints=3"]
    _unlearn_with_hook(_config(tiny_lm, out, "train.max_steps=4", *extra), None)
    assert _checkpoints(out) == [2, 4]
    for f in (out / "checkpoints" / "4" / "state" / "d").iterdir():  # cut short, as a full disk would
        f.write_bytes(f.read_bytes()[:10])
    orphans = [out / "checkpoints" / "6.orbax-checkpoint-tmp-1700000000", out / ".model.tmp-killed"]
    for orphan in orphans:
        orphan.mkdir()
        (orphan / "part").write_text("half")
    with caplog.at_level(logging.WARNING):
        summary = _unlearn_with_hook(_config(tiny_lm, out, "train.max_steps=6", *extra), None, resume=True)
    assert "checkpoint of step 4 is unreadable" in caplog.text and "resuming from step 2" in caplog.text
    assert summary["final"]["step"] == 6 and _steps(out) == [1, 2, 3, 4, 5, 6]
    assert not any(o.exists() for o in orphans)
    assert _checkpoints(out) == [2, 4, 6] and list((out / "checkpoints").glob("corrupt-4-*"))


def test_no_readable_checkpoint_is_one_clear_error_and_nothing_moved(tiny_lm, tmp_path):
    out = tmp_path / "run"
    _unlearn_with_hook(_config(tiny_lm, out, "train.max_steps=2"), None)
    (out / "checkpoints" / "2" / "meta" / "metadata").write_text("{")
    with pytest.raises(CheckpointError, match="no checkpoint in .* could be read .*--overwrite"):
        _unlearn_with_hook(_config(tiny_lm, out, "train.max_steps=3"), None, resume=True)
    assert _checkpoints(out) == [2]


def test_time_based_checkpoints(tiny_lm, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tiny_lm, out, "train.max_steps=3", "output.checkpoint_minutes=1e-9", "output.keep_checkpoints=5")
    _unlearn_with_hook(cfg, None)
    # due at every step; the vote rides with a step and is read one step late, so the first
    # timed save is after step 2 (step 3 is the last, always saved)
    assert _checkpoints(out) == [2, 3]
    assert load_config(None, []).output.checkpoint_minutes == 30.0  # long runs save by default
