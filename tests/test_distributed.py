"""Same losses on 1 device, 8 CPU devices and 2 JAX processes; exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import REPO, TINY_TRAIN

pytestmark = pytest.mark.subprocess


def cli(*args, env_extra=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "jaxunlearn", "unlearn", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def losses(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def common(tiny_lm, out, *extra):
    return [
        f"model.path={tiny_lm}",
        f"output.dir={out}",
        *TINY_TRAIN,
        "objective.name=NPO+GD",
        "train.max_steps=3",
        "output.export=false",
        *extra,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_device_eight_devices_two_processes(tiny_lm, tmp_path):
    single = cli(*common(tiny_lm, tmp_path / "one", "mesh.data=1"))
    eight = cli(
        *common(tiny_lm, tmp_path / "eight", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"),
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert single.wait(600) == 0, single.stderr.read()[-3000:]
    assert eight.wait(600) == 0, eight.stderr.read()[-3000:]

    port = free_port()
    procs = [
        cli(
            *common(tiny_lm, tmp_path / "two", "mesh.data=2"),
            env_extra={
                "JAXUNLEARN_COORDINATOR": f"127.0.0.1:{port}",
                "JAXUNLEARN_NUM_PROCESSES": "2",
                "JAXUNLEARN_PROCESS_ID": str(i),
                "JAXUNLEARN_CPU_COLLECTIVES": "gloo",
            },
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read()[-3000:]

    ref = losses(tmp_path / "one")
    assert len(ref) == 3
    for name in ("eight", "two"):
        got = losses(tmp_path / name)
        for a, b in zip(ref, got):
            for key in ("loss", "loss/NPO", "loss/GD", "grad_norm"):
                assert b[key] == pytest.approx(a[key], rel=2e-5), (name, key, a[key], b[key])


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_lm, tmp_path):
    args = [
        *TINY_TRAIN,
        f"model.path={tiny_lm}",
        "objective.name=ME+GD",
        "train.max_steps=12",
        "output.checkpoint_every=1",
        "output.keep_checkpoints=3",
    ]
    straight = cli(*args, f"output.dir={tmp_path / 'straight'}")

    killed_dir = tmp_path / "killed"
    victim = cli(*args, f"output.dir={killed_dir}")
    deadline = time.time() + 300
    while time.time() < deadline and not (killed_dir / "checkpoints" / "3").exists():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "summary.json").exists(), "the run finished before it could be killed"
    assert straight.wait(600) == 0, straight.stderr.read()[-3000:]

    resumed = cli(*args, f"output.dir={killed_dir}", "--resume")
    assert resumed.wait(600) == 0, resumed.stderr.read()[-3000:]
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(killed_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
    steps = [x["step"] for x in losses(killed_dir)]
    assert steps[-1] == 12 and len(steps) >= 12  # the killed part plus the resumed steps


def test_lora_on_eight_devices_equals_one(tiny_lm, tmp_path):
    """LoRA mode sharded (adapters carry logical axes: data 2 x fsdp 2 x tensor 2) gives the
    losses of one device; NPO's reference is the base with the adapters off."""
    lora = ("lora.rank=4", "lora.alpha=8", "train.lr=1e-3")
    single = cli(*common(tiny_lm, tmp_path / "one", "mesh.data=1", *lora))
    eight = cli(
        *common(tiny_lm, tmp_path / "eight", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", *lora),
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert single.wait(600) == 0, single.stderr.read()[-3000:]
    assert eight.wait(600) == 0, eight.stderr.read()[-3000:]
    ref, got = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert len(ref) == len(got) == 3
    for a, b in zip(ref, got):
        for key in ("loss", "loss/NPO", "loss/GD", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=2e-5), (key, a[key], b[key])
