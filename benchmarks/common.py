"""Shared pieces of the benchmarks: model shapes, the same random weights in both
frameworks, synthetic QA batches, interleaved timing and peak-memory probes."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

# Llama shapes (HF LlamaConfig fields). batch is per stream (forget, retain), seq the padded length.
SHAPES = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=False,
        batch=2,
        seq=32,
    ),
    "llama-20m": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=32000,
        tie_word_embeddings=False,
        batch=8,
        seq=256,
    ),
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        batch=4,
        seq=256,
    ),
    "llama3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
        batch=8,
        seq=512,
    ),
}
# Dense bf16 peak FLOP/s per chip, for model FLOPs utilization on accelerators.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def hf_config_dict(shape: str) -> dict:
    s = {k: v for k, v in SHAPES[shape].items() if k not in ("batch", "seq")}
    return dict(
        s,
        model_type="llama",
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        hidden_act="silu",
        attention_bias=False,
    )


def torch_model(shape: str, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**hf_config_dict(shape))
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).to(getattr(torch, dtype)).to(device)


def jax_config(shape: str, dtype: str = "float32", remat: str = "none"):
    import dataclasses

    from jaxunlearn.models.registry import family_for

    config = family_for("llama").config_from_hf(hf_config_dict(shape))
    return dataclasses.replace(config, param_dtype=dtype, compute_dtype=dtype, remat=remat)


def jax_model(shape: str, torch_model=None, dtype: str = "float32", remat: str = "none"):
    """The jaxunlearn model: the torch model's exact weights, or (None) its own random ones,
    so a process measuring jaxunlearn alone never imports torch."""
    import jaxunlearn
    from jaxunlearn.checkpoints.convert import DictSource, load_model

    config = jax_config(shape, dtype, remat)
    if torch_model is None:
        return jaxunlearn.create_model(config, seed=0)
    tensors = {k: v.detach().float().cpu().numpy() for k, v in torch_model.state_dict().items()}
    return load_model(config, DictSource(tensors, "the torch model"))


def qa_batch(shape: str, seed: int, batch: int | None = None, seq: int | None = None) -> dict:
    """Right-padded rows: a prompt (labels -100), an answer (labels = ids), then padding."""
    s = SHAPES[shape]
    b, t, v = batch or s["batch"], seq or s["seq"], s["vocab_size"]
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, v, (b, t)).astype(np.int32)
    lengths = rng.integers(t * 3 // 4, t + 1, b)
    prompt = lengths // 3
    pos = np.arange(t)[None]
    mask = (pos < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 2)
    labels = np.where((pos >= prompt[:, None]) & (mask == 1), ids, -100).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def interleaved(runners: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each runner, measured round-robin so machine noise hits all alike."""
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run(steps)
            times[name].append((time.perf_counter() - t) / steps)
    return times


def median(xs) -> float:
    return float(statistics.median(xs))


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: Linux carries ru_maxrss
    over exec, so a child would report its parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_of_child(script: str, args: list[str]) -> dict:
    """Run this benchmark for one framework in a fresh process and read its JSON line."""
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1")
    )
    if out.returncode:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def accelerator_name() -> str:
    import jax

    d = jax.devices()[0]
    return d.device_kind if d.platform != "cpu" else "cpu"


def write_json(path: str | None, result) -> None:
    """The results as JSON too, when --json names a file."""
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)


XLA_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def environment() -> dict:
    """What a figure depends on: CPU model and the vector extensions XLA compiles for, cores
    usable, library versions, thread and XLA settings, the git commit."""
    import platform

    cpu, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu in ("unknown", "", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {}
    for name in ("jax", "jaxlib", "flax", "torch", "transformers", "lm_eval"):
        try:
            import importlib.metadata as md

            versions[name] = md.version(name)
        except Exception:
            versions[name] = None
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        # the results file run_all.py rewrites as it goes does not make the code dirty
        status = ["git", "-C", root, "status", "--porcelain", "-uno", "--", ".", ":!benchmarks/results.json"]
        dirty = subprocess.run(status, capture_output=True, text=True)
        git = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        git = None
    return {
        "cpu": cpu,
        "cpu_flags": sorted(f for f in XLA_CPU_FLAGS if f in flags),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        **versions,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
        "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", ""),
        "git": git,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def environment_line(env: dict, commits: str | None = None) -> str:
    """One line for the docs beside a figure; `commits` replaces 'commit <env's git>' (a
    set whose entries were measured at several commits)."""
    versions = ", ".join(f"{k} {env[k]}" for k in ("jax", "jaxlib", "torch", "transformers", "lm_eval") if env.get(k))
    threads = ", ".join(f"{k}={env[k]}" for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY") if env.get(k))
    return (
        f"{env['cpu']} ({env['cores']} cores; {' '.join(env['cpu_flags']) or 'no AVX-512/AMX'}); {versions}; "
        f"{threads or 'no XLA/OMP settings'}; {commits or 'commit ' + env['git']}; {env['date']}"
    )


def spread_text(xs) -> str:
    """The range of repeated measurements: 'min-max (n=N)'."""
    return f"{min(xs):.3g}-{max(xs):.3g} (n={len(xs)})"


def warm_total(eval_result: dict) -> dict | None:
    """The "total (warm)" phase of an eval benchmark's result (None for other results)."""
    return next((x for x in eval_result.get("phases", []) if x["phase"] == "total (warm)"), None)


def ceilings(floor_case: dict, transformers_s: float | None, measured_ratio: float | None) -> dict:
    """A floor case's best ratios over the transformers time, at each framework's product
    rates, beside the ratio measured (benchmarks/floor.py)."""
    return {
        "transformers_s": transformers_s,
        "measured_ratio": measured_ratio,
        **{
            f"{fw}_ceiling": transformers_s / floor_case[f"{fw}_floor_s"] if transformers_s else None
            for fw in ("xla", "torch")
        },
    }


def ratio_range(ours, theirs) -> str:
    """The range of per-round speed ratios theirs / ours (rounds interleaved, paired)."""
    ratios = [b / a for a, b in zip(ours, theirs)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"
