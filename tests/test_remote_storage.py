"""Run directories on object stores (issue 18, item 6): output.dir=gs://... writes checkpoints
there through Orbax and everything else through a staging folder, resumes from the URL, and
never turns the URL into a local folder. A GCS emulator (gcp-storage-emulator) stands in for
the bucket: gcsfs (etils.epath) and tensorstore (Orbax) both talk to it over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_EVAL, TINY_TRAIN


COMMON = ["objective.name=GA", "train.warmup_steps=0", "output.checkpoint_minutes=null", "train.max_steps=4"]


def _listing(url) -> list[str]:
    from jaxunlearn.storage import remote_files, remote_path

    return remote_files(remote_path(url))


def test_a_mirror_copies_changes_up_and_down_and_leaves_checkpoints_to_orbax(gcs_bucket, tmp_path):
    from jaxunlearn.storage import Mirror, remote_path

    url = remote_path(f"{gcs_bucket}/mirror")
    local = tmp_path / "staging"
    (local / "eval").mkdir(parents=True)
    (local / "checkpoints" / "3").mkdir(parents=True)
    (local / "metrics.jsonl").write_text("1\n")
    (local / "eval" / "summary.json").write_text("{}")
    (local / "checkpoints" / "3" / "x").write_text("orbax writes these at the URL itself")
    mirror = Mirror(url, local)
    assert mirror.push() == 2 and mirror.push() == 0  # nothing changed: nothing copied
    assert _listing(url) == ["eval/summary.json", "metrics.jsonl"]
    (local / "metrics.jsonl").write_text("1\n2\n")
    (local / "eval" / "summary.json").unlink()
    assert mirror.push() == 1
    assert _listing(url) == ["metrics.jsonl"] and (url / "metrics.jsonl").read_text() == "1\n2\n"
    (url / "checkpoints" / "3" / "x").write_text("a checkpoint file")
    (url / "task_01_id1" / "checkpoints" / "3" / "x").write_text("a continual task's checkpoint file")
    again = Mirror(url, tmp_path / "pulled")
    assert again.pull() == 1 and (tmp_path / "pulled" / "metrics.jsonl").read_text() == "1\n2\n"
    assert not (tmp_path / "pulled" / "checkpoints").exists() and not (tmp_path / "pulled" / "task_01_id1").exists()


def test_a_run_at_a_url_is_refused_kept_for_resume_or_replaced_whole(gcs_bucket):
    from jaxunlearn.errors import ConfigError
    from jaxunlearn.storage import remote_path
    from jaxunlearn.training.loop import prepare_run_dir

    url = remote_path(f"{gcs_bucket}/earlier")
    (url / "run.json").write_text("{}")
    (url / "checkpoints" / "2" / "x").write_text("a checkpoint file")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it or --overwrite"):
        prepare_run_dir(url, resume=False, overwrite=False)
    prepare_run_dir(url, resume=True, overwrite=False)
    assert _listing(url) == ["checkpoints/2/x", "run.json"]
    prepare_run_dir(url, resume=False, overwrite=True)
    assert _listing(url) == []
    (url / "other.txt").write_text("not a jaxunlearn run")
    with pytest.raises(ConfigError, match="--resume: gs://bucket/earlier holds no jaxunlearn run"):
        prepare_run_dir(url, resume=True, overwrite=False)


def test_unlearn_to_a_url_is_interrupted_and_resumed_from_it(gcs_bucket, tiny_lm, tmp_path, monkeypatch):
    from jaxunlearn.checkpoints.api import load_pretrained
    from jaxunlearn.config import load_config
    from jaxunlearn.errors import Interrupted
    from jaxunlearn.pipelines import unlearn as api
    from jaxunlearn.storage import remote_path

    monkeypatch.chdir(tmp_path)  # a URL turned into a local path would show up here as ./gs:
    staging = tmp_path / "staging"
    run_url = f"{gcs_bucket}/runs/ga"

    def config(out):
        extra = [f"output.staging_dir={staging}"]
        return load_config(None, [f"model.path={tiny_lm}", f"output.dir={out}", *TINY_TRAIN, *COMMON, *extra])

    def interrupt_at_2(step, _model):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(api, "_periodic_eval", lambda *a: interrupt_at_2)
    with pytest.raises(Interrupted, match=r"after step 3 of 4: checkpoint saved in gs://bucket/runs/ga/checkpoints"):
        api.unlearn(config(run_url), progress=False)
    files = _listing(run_url)
    assert "run.json" in files and "checkpoints/3/_CHECKPOINT_METADATA" in files
    remote = remote_path(run_url)
    assert [json.loads(x)["step"] for x in (remote / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not (tmp_path / "gs:").exists() and list(staging.iterdir()) == []  # staging removed

    monkeypatch.setattr(api, "_periodic_eval", lambda *a: None)
    summary = api.unlearn(config(run_url), resume=True, progress=False)
    assert summary["out_dir"] == run_url and summary["export"] == f"{run_url}/model"
    assert [json.loads(x)["step"] for x in (remote / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert json.loads((remote / "summary.json").read_text())["final"]["step"] == 4
    download = tmp_path / "downloaded"
    download.mkdir()
    for p in (remote / "model").iterdir():
        (download / p.name).write_bytes(p.read_bytes())

    exported, _ = load_pretrained(str(download))  # the URL's export is the trained model
    ids = np.arange(3, 19, dtype=np.int32)[None]
    np.testing.assert_allclose(np.asarray(exported(ids)), np.asarray(summary["model"](ids)), atol=1e-5)
    assert not (tmp_path / "gs:").exists()


def test_eval_to_a_url_and_a_run_already_there(gcs_bucket, tiny_lm, tmp_path, monkeypatch, capsys):
    from jaxunlearn.cli import main

    monkeypatch.chdir(tmp_path)
    out = f"{gcs_bucket}/runs/eval"
    args = ["eval", f"model.path={tiny_lm}", f"output.dir={out}", f"output.staging_dir={tmp_path}", *TINY_EVAL]
    args += ["eval.sets=[forget]", "eval.cosine=false", "--no-progress"]
    assert main(args) == 0
    assert {"summary.json", "report.md", "per_example.jsonl"} <= set(_listing(out))
    assert main(args) == 2 and "already holds an evaluation; pass --overwrite" in capsys.readouterr().err
    assert not (tmp_path / "gs:").exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("scheme, module, fix", [("gs", "gcsfs", "'jaxunlearn[gcs]'"), ("s3", "s3fs", "s3fs")])
def test_a_store_without_its_client_is_refused_before_any_work(scheme, module, fix, monkeypatch, capsys):
    from jaxunlearn.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    assert main(["unlearn", f"output.dir={scheme}://bucket/run", "model.path=/nonexistent"]) == 2
    assert f"writing to {scheme}:// needs {module} (pip install {fix})" in capsys.readouterr().err


def test_a_bucket_that_cannot_be_written_fails_before_the_evaluation(gcs_bucket, tiny_lm, capsys):
    from jaxunlearn.cli import main

    assert main(["eval", f"model.path={tiny_lm}", "output.dir=gs://no-such-bucket/eval", *TINY_EVAL]) == 2
    assert "output.dir gs://no-such-bucket/eval cannot be written" in capsys.readouterr().err


def test_out_flags_take_local_directories_only(capsys):
    from jaxunlearn.cli import main

    assert main(["demo", "--out", "gs://bucket/demo"]) == 2
    assert "--out gs://bucket/demo: this command writes a local directory" in capsys.readouterr().err
    assert not Path("gs:").exists()
