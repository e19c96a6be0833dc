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

from conftest import REPO, TINY_EVAL, TINY_TRAIN

pytestmark = pytest.mark.subprocess


def cli(*args, env_extra=None, probe: str | None = None, command: str = "unlearn"):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    start = ["-c", probe] if probe else ["-m", "jaxunlearn"]
    return subprocess.Popen(
        [sys.executable, *start, command, *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def run_here(*args, command: str = "unlearn") -> None:
    """The one-device reference run in this process: a child would spend ~8 s importing."""
    from jaxunlearn import cli

    assert cli.main([command, *args, "--no-progress"]) == 0


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


def two_processes() -> list[dict]:
    """The environment of each of 2 JAX processes on this host (gloo collectives)."""
    shared = {
        "JAXUNLEARN_COORDINATOR": f"127.0.0.1:{free_port()}",
        "JAXUNLEARN_NUM_PROCESSES": "2",
        "JAXUNLEARN_CPU_COLLECTIVES": "gloo",
    }
    return [{**shared, "JAXUNLEARN_PROCESS_ID": str(i)} for i in range(2)]


# The CLI in a process that records every jax.device_put of a >= 2-D array: its shape and
# whether the target sharding splits it (written to $PLACEMENTS at exit).
PLACEMENT_PROBE = """
import atexit, json, os, runpy, sys
import jax
records, original = [], jax.device_put

def device_put(x, device=None, *args, **kwargs):
    shape = getattr(x, "shape", ())
    if len(shape) >= 2:
        split = device is not None and hasattr(device, "shard_shape") and device.shard_shape(shape) != tuple(shape)
        records.append([list(shape), bool(split)])
    return original(x, device, *args, **kwargs)

jax.device_put = device_put
atexit.register(lambda: open(os.environ["PLACEMENTS"], "w").write(json.dumps(records)))
sys.argv = ["jaxunlearn", *sys.argv[1:]]
runpy.run_module("jaxunlearn", run_name="__main__")
"""


def test_one_device_eight_devices_two_processes(tiny_lm, tmp_path, gcs_bucket):
    """Same losses on 1 device, 8 devices and 2 processes with FSDP across the processes;
    the 2-process run loads every split parameter straight onto its shards (no device ever
    holds one whole) and exports, tensor by tensor, the one-process run's model. It runs as
    a pod does, into gs:// (a GCS emulator): both processes write their shards of each
    checkpoint to the URL, process 0 copies metrics and export up, and one process resumes
    the pod's last checkpoint from the URL."""
    from jaxunlearn.storage import remote_files, remote_path

    url = f"{gcs_bucket}/pod"
    eight = cli(
        *common(tiny_lm, tmp_path / "eight", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"),
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    run_here(*common(tiny_lm, tmp_path / "one", "mesh.data=1", "output.export=true"))
    assert eight.wait(600) == 0, eight.stderr.read()[-3000:]

    procs = [
        cli(
            *common(tiny_lm, url, "mesh.data=1", "mesh.fsdp=2", "output.export=true", "output.checkpoint_every=1"),
            env_extra={**env, "PLACEMENTS": str(tmp_path / f"placements{i}.json")},
            probe=PLACEMENT_PROBE,
        )
        for i, env in enumerate(two_processes())
    ]
    for p in procs:  # communicate: a store client's warnings can fill a pipe that wait() leaves unread
        stderr = p.communicate(timeout=600)[1]
        assert p.returncode == 0, stderr[-3000:]
    files = remote_files(remote_path(url))
    for i in (0, 1):  # each process wrote its own shards of the last checkpoint
        assert any(f.startswith(f"checkpoints/3/state/ocdbt.process_{i}/") for f in files), files
    pod = remote_path(url)
    (tmp_path / "two" / "model").mkdir(parents=True)
    for name in ("metrics.jsonl", "model/model.safetensors"):
        (tmp_path / "two" / name).write_bytes((pod / name).read_bytes())

    ref = losses(tmp_path / "one")
    assert len(ref) == 3
    for name in ("eight", "two"):
        got = losses(tmp_path / name)
        assert len(got) == 3
        for a, b in zip(ref, got):
            for key in ("loss", "loss/NPO", "loss/GD", "grad_norm"):
                assert b[key] == pytest.approx(a[key], rel=2e-5), (name, key, a[key], b[key])

    one = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)  # Adam: 3 steps

    # shapes of the parameters FSDP splits (the matrices: an even embed dimension; norms stay
    # replicated): the HF tensors' shapes, stacked per layer as the model holds them, either way round
    layers = 1 + max(int(k.split(".")[2]) for k in one if k.startswith("model.layers."))
    split_shapes = set()
    for key, value in one.items():
        if value.ndim < 2:
            continue
        for shape in (value.shape, value.shape[::-1]):
            split_shapes |= {tuple(shape), (layers, *shape)}
    for i in range(2):
        records = json.loads((tmp_path / f"placements{i}.json").read_text())
        assert records, "the probe saw no placement"
        whole = {tuple(shape) for shape, split in records if not split and tuple(shape) in split_shapes}
        assert not whole, f"process {i} placed parameters whole on a device: {sorted(whole)}"

    run_here(*common(tiny_lm, url, "mesh.data=1", "train.max_steps=4"), "--resume")  # a pod's checkpoint, one process
    assert [x["step"] for x in map(json.loads, (pod / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4]


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_lm, tmp_path):
    args = [
        *TINY_TRAIN,
        f"model.path={tiny_lm}",
        "objective.name=ME+GD",
        "train.max_steps=8",
        "output.checkpoint_every=1",
        "output.keep_checkpoints=3",
    ]
    killed_dir = tmp_path / "killed"
    victim = cli(*args, f"output.dir={killed_dir}")
    deadline = time.time() + 300
    while time.time() < deadline and not (killed_dir / "checkpoints" / "3").exists():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "summary.json").exists(), "the run finished before it could be killed"
    run_here(*args, f"output.dir={tmp_path / 'straight'}")

    resumed = cli(*args, f"output.dir={killed_dir}", "--resume")
    assert resumed.wait(600) == 0, resumed.stderr.read()[-3000:]
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(killed_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
    steps = [x["step"] for x in losses(killed_dir)]
    assert steps[-1] == 8 and len(steps) >= 8  # the killed part plus the resumed steps


def test_lora_on_eight_devices_equals_one(tiny_lm, tmp_path):
    """LoRA mode sharded (adapters carry logical axes: data 2 x fsdp 2 x tensor 2) gives the
    losses of one device; NPO's reference is the base with the adapters off."""
    lora = ("lora.rank=4", "lora.alpha=8", "train.lr=1e-3")
    eight = cli(
        *common(tiny_lm, tmp_path / "eight", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", *lora),
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    run_here(*common(tiny_lm, tmp_path / "one", "mesh.data=1", *lora))
    assert eight.wait(600) == 0, eight.stderr.read()[-3000:]
    ref, got = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert len(ref) == len(got) == 3
    for a, b in zip(ref, got):
        for key in ("loss", "loss/NPO", "loss/GD", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=2e-5), (key, a[key], b[key])


def test_a_two_process_evaluation_equals_one_process(tiny_lm, tmp_path):
    """Launched on 2 processes with the model split across them (FSDP), every process runs
    the evaluation on the one mesh; scoring and decoding results are gathered and process 0
    writes what one process writes: the same answers, the same numbers. Process 1 writes
    nothing."""
    common = [f"model.path={tiny_lm}", *TINY_TRAIN, *TINY_EVAL, "eval.sets=[forget]", "eval.cosine=false"]
    procs = [
        cli(*common, "mesh.data=1", "mesh.fsdp=2", f"output.dir={tmp_path / 'two'}", env_extra=env, command="eval")
        for env in two_processes()
    ]
    run_here(*common, f"output.dir={tmp_path / 'one'}", command="eval")
    outputs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    assert "process 1: evaluated with the others" in outputs[1]
    assert "| forget" in outputs[0]  # process 0 prints the table
    a = [json.loads(x) for x in (tmp_path / "one" / "per_example.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "two" / "per_example.jsonl").read_text().splitlines()]
    assert len(a) == len(b) > 0
    assert sum("generation" in x for x in a) == 4  # forget answered; holdout (MIA) scored only
    for x, y in zip(a, b):
        assert y.keys() == x.keys()
        assert y.get("generation") == x.get("generation")
        for key in ("avg_nll", "probability", "truth_ratio", "rougeL_recall", "token_entropy", "exact_memorization"):
            if x.get(key) is not None:
                assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), key
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert sb["sets"]["forget"] == pytest.approx(sa["sets"]["forget"], rel=1e-5)


def _lines(path) -> int:
    """Complete lines in a file another process appends to (0 before it exists)."""
    return path.read_text().count("\n") if path.exists() else 0


def test_a_signal_to_one_process_stops_both_at_the_same_step(tiny_lm, tmp_path):
    """SIGTERM to process 1 alone: the flag rides with the next step's votes, so both
    processes decide at the same step, save it together and exit 143 with the same message
    (no per-step collective of their own)."""
    out = tmp_path / "run"
    args = [*common(tiny_lm, out, "mesh.data=2"), "train.max_steps=200"]
    procs = [cli(*args, env_extra=env) for env in two_processes()]
    deadline = time.time() + 300
    while time.time() < deadline and not _lines(out / "metrics.jsonl") >= 2:
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errors[0][-3000:]
    stops = [line for e in errors for line in e.splitlines() if "SIGTERM after step" in line]
    assert len(stops) == 2 and stops[0].split("after step")[1] == stops[1].split("after step")[1], stops
    step = int(stops[0].split("after step ")[1].split()[0])
    assert 2 <= step < 200 and (out / "checkpoints" / str(step)).exists()
