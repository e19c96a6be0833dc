"""Each benchmark runs on its tiniest shape (timings are printed, never asserted), and the
two frameworks it compares agree on what they computed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None  # the TPU compiler, for deviceless TPU plans


def run_benchmark(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.parametrize("reference", ["live", "precomputed"])
def test_train_step_benchmark_tiny(tmp_path, reference):
    out = run_benchmark(
        "train_step.py",
        *("--shape", "tiny", "--objective", "NPO+GD", "--rounds", "1", "--steps", "1", "--no-memory"),
        *(["--precompute-reference", "--epochs", "4"] if reference == "precomputed" else []),
        *("--json", str(tmp_path / "r.json")),
    )
    assert "jaxunlearn / pytorch speed" in out.stdout
    env = json.loads((tmp_path / "r.json").read_text())["environment"]
    assert env["cores"] >= 1 and env["jax"] and env["git"] and "environment: " in out.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    loss = result["first_step_loss"]  # same weights, same batch, same objective (reference read or run)
    assert abs(loss["jaxunlearn"] - loss["pytorch"]) <= 1e-4 * abs(loss["pytorch"])
    assert [r["framework"] for r in result["rows"]] == ["jaxunlearn", "pytorch"]
    if reference == "precomputed":
        assert result["precompute_reference"] and result["epochs"] == 4 and result["reference_pass_s"] > 0
        assert "one-off reference pass" in out.stdout


def test_eval_benchmark_tiny(tiny_lm, tmp_path):
    out = run_benchmark(
        "eval.py",
        "--model",
        str(tiny_lm),
        "--rows",
        "3",
        "--batch",
        "4",
        "--max-length",
        "80",
        "--rounds",
        "1",
        "--projections",  # not this CPU's default everywhere: the layout reaches decoding and the record
        "columns",
        "--torch-generation-batch",  # transformers in two generation batches, jaxunlearn in one
        "2",
        "--json",
        str(tmp_path / "e.json"),
    )
    assert "transformers" in out.stdout and "environment: " in out.stdout
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["identical_generations"] == "3/3"
    assert result["max_abs_avg_nll_diff"] < 1e-3
    assert result["decoding_projections"] == "columns" and "decoding projections columns" in out.stdout
    assert (result["generation_batch"], result["torch_batch"], result["torch_generation_batch"]) == ("auto", 32, 2)
    assert result["overlap_generation"] is True and "jaxunlearn generation beside scoring" in out.stdout  # CPU default


def test_eval_benchmark_memorized_answers_from_scoring(tiny_lm, tmp_path):
    """--memorize finetunes the model on the benchmark's rows first; jaxunlearn then starts
    its answers from what scoring showed, and they still match transformers'."""
    out = run_benchmark(
        *("eval.py", "--model", str(tiny_lm), "--rows", "3", "--batch", "4", "--max-length", "64", "--rounds", "1"),
        *("--memorize", "2", "--answers-from-scoring", "true", "--json", str(tmp_path / "e.json")),
    )
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["memorized_epochs"] == 2 and result["model"] == str(tiny_lm)
    assert result["answers_from_scoring"] is True and result["overlap_generation"] is False
    assert result["identical_generations"] == "3/3" and result["max_abs_avg_nll_diff"] < 1e-3
    assert "finetuning" in out.stdout and "from what it showed" in out.stdout


def test_memory_benchmark_tiny(tmp_path):
    out = run_benchmark(
        "memory.py",
        "--models",
        "tiny",
        "--devices",
        "2",
        "--policies",
        "mixed",
        "lora",
        "--lora-rank",
        "4",
        "--remat",
        "none",
        "--seq",
        "32",
        "--json",
        str(tmp_path / "m.json"),
    )
    assert "TPU v5e" in out.stdout
    mixed, lora = json.loads((tmp_path / "m.json").read_text())
    # LoRA: a bf16 base plus small fp32 adapters and their moments, no reference copy
    assert lora["policy"] == "lora r4" and lora["arguments_GiB"] < mixed["arguments_GiB"] / 2
    # FSDP over two devices splits the parameters and optimizer state (norms stay replicated):
    # mixed holds fp32 parameters and two fp32 moments plus a bf16 reference, 14 bytes per
    # parameter on one device
    whole = mixed["params_B"] * 1e9 * 14 / 2**30
    assert 0.45 < mixed["arguments_GiB"] / whole < 0.8


def test_choice_benchmark_tiny(tiny_lm, tmp_path):
    pytest.importorskip("lm_eval")
    out = run_benchmark(
        "choice.py", "--model", str(tiny_lm), "--questions", "8", "--rounds", "1", "--json", str(tmp_path / "c.json")
    )
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["acc_jaxunlearn"] == result["acc_lm_eval"] and result["max_loglik_diff"] < 2e-3
    assert "lm-eval HF" in out.stdout and result["environment"]["cpu_flags"] is not None


def test_memory_benchmark_tpu_target_needs_libtpu(monkeypatch):
    """A TPU plan compiles through libtpu without the chip; without it (or with a device
    count the topology lacks) the benchmark stops with the fix."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import memory

    with pytest.raises(SystemExit, match="has 8 devices; pass --devices 8"):
        memory.target_devices("tpu-v5e-8", 2)
    if HAS_LIBTPU:
        pytest.skip("libtpu is installed: the topology builds")
    with pytest.raises(SystemExit, match=r"pip install 'libtpu==[0-9.]+\*?'"):
        memory.target_devices("tpu-v5e-8", 8)


def test_run_all_skips_a_tpu_plan_without_libtpu(monkeypatch, tmp_path, capsys):
    """An entry that needs libtpu is skipped where it is missing, and an earlier result of
    it, with the set's name and environment, stays as it was."""
    if HAS_LIBTPU:
        pytest.skip("libtpu is installed")
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import docs_benchmarks
    import run_all

    out = tmp_path / "results.json"
    earlier = {"target": "tpu-v5e-8", "policy": "mixed", "remat": "full", "refused": "Ran out of memory on HBM"}
    out.write_text(
        json.dumps(
            {"set": "quick", "environment": {"git": "abc"}, "entries": {"memory_tpu_v5e8": {"result": [earlier]}}}
        )
    )
    results = run_all.main(["--only", "memory_tpu_v5e8", "--out", str(out)])
    assert "skipped, needs the libtpu module (its earlier result kept)" in capsys.readouterr().out
    assert results["set"] == "quick" and results["environment"] == {"git": "abc"}
    assert results["entries"]["memory_tpu_v5e8"]["result"] == [earlier]
    table = docs_benchmarks.memory_table(results["entries"])
    assert "| tpu-v5e-8 | mixed | full | | | | refused: Ran out of memory on HBM |" in table


def test_floor_arithmetic(monkeypatch):
    """The floor is the larger of the decoding chain at its best rate and the core-seconds
    of all the work at the best per-core rates; known answers drop decoding and prefill."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import floor

    work = {
        "scoring_layer_rows": 90,
        "prefill_layer_rows": 10,
        "scoring_head_rows": 0,
        "decoding_layer_rows": 50,
        "decoding_head_rows": 0,
        "decoding_batch": 20,
    }
    all_cores = {"xla_1024": 200.0, "xla_20": 80.0, "torch_1024": 300.0, "torch_20": 200.0}
    one_core = {"xla_1024": 120.0, "xla_20": 50.0, "torch_1024": 100.0, "torch_20": 150.0}
    cases = floor.floors(work, all_cores, one_core, cores=2, layer_flops=1e9, head_flops=1e9)
    decoded, known = cases["answers decoded to their budgets"], cases["answers known from scoring"]
    # XLA: chain 50/80 = 0.625 s; core-seconds (50/max(50, 40) + 100/max(120, 100)) / 2 = 0.9167 s
    assert decoded["xla_floor_s"] == pytest.approx((1.0 + 100 / 120) / 2)
    # PyTorch: chain 50/200 = 0.25 s; core-seconds (50/max(150, 100) + 100/max(100, 150)) / 2 = 0.5 s
    assert decoded["torch_floor_s"] == pytest.approx(0.5)
    assert decoded["work_TFLOP"] == pytest.approx(0.15) and known["work_TFLOP"] == pytest.approx(0.09)
    assert known["xla_floor_s"] == pytest.approx(90 / 120 / 2)
    one_core["torch_20"] = 20.0  # a slow one-core rate: the chain on both cores is the floor
    assert floor.floors(work, all_cores, one_core, 2, 1e9, 1e9)["answers decoded to their budgets"][
        "torch_floor_s"
    ] == pytest.approx(max(50 / 200, (50 / 100 + 100 / 150) / 2))


def test_floor_benchmark_tiny(tiny_lm, tmp_path):
    out = run_benchmark(
        *("floor.py", "--model", str(tiny_lm), "--rows", "3", "--max-length", "64", "--rounds", "1"),
        *("--transformers-seconds", "10", "--json", str(tmp_path / "f.json")),
    )
    result = json.loads((tmp_path / "f.json").read_text())
    w = result["work"]
    assert w["rows"] == 3 and w["candidates"] > 3 and w["decoding_batch"] == 3
    assert w["decoding_head_rows"] - w["decoding_layer_rows"] == 3  # the first token comes from the prefill
    assert 0 < w["scoring_head_rows"] < w["scoring_layer_rows"]
    rates = result["GFLOP_per_s"]
    assert set(rates) == {"all_cores", "one_core"} and all(v > 0 for r in rates.values() for v in r.values())
    for case in result["cases"].values():
        assert case["transformers_s"] == 10 and case["xla_ceiling"] == pytest.approx(10 / case["xla_floor_s"])
    decoded, known = result["cases"].values()
    assert known["work_TFLOP"] < decoded["work_TFLOP"] and known["xla_floor_s"] < decoded["xla_floor_s"]
    assert "GFLOP/s of the product stack" in out.stdout


def test_floor_table_reads_the_eval_entries_of_the_same_file(monkeypatch):
    """The ceiling in the docs divides the eval entry's transformers time in the results
    file by the floor, not the time the floor benchmark read when it ran."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import docs_benchmarks

    case = {"eval_entry": "eval_tofu", "work_TFLOP": 2.0, "xla_floor_s": 10.0, "torch_floor_s": 8.0}
    rates = {"xla_1024": 1.0, "xla_20": 1.0, "torch_1024": 1.0, "torch_20": 1.0}
    floor_result = {
        "cases": {"answers decoded to their budgets": {**case, "transformers_s": 99.0, "measured_ratio": 9.0}},
        "GFLOP_per_s": {"all_cores": rates, "one_core": rates},
        "work": {"decoding_batch": 20},
    }
    phases = [{"phase": "total (warm)", "transformers_s": 30.0, "speedup": 1.5}]
    entries = {
        "eval_tofu": {"result": {"phases": phases}},
        "floor_eval": {"command": "python benchmarks/floor.py", "result": floor_result},
    }
    table = docs_benchmarks.floor_table(entries)
    assert "| `eval_tofu` | answers decoded to their budgets | 2 | 10 / 8 | 30 | **3.00x / 3.75x** | 1.50x |" in table
