"""Shared fixtures: tiny random HF models (PyTorch reference) and the real SmolLM2.

Shapes are kept few and small so JAX compiles stay cheap on a 2-core CPU; anything costly
(the real model, tiny checkpoints on disk) is built once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for this test session, never ~/.cache: the CLI runs in
# child processes (and in this one) compile the same tiny-model steps again and again; with
# the cache each shape compiles once per session. Tests of the cache itself set their own.
if "JAXUNLEARN_COMPILATION_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _SESSION_CACHE = tempfile.mkdtemp(prefix="jaxunlearn-tests-xla-")
    atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
    os.environ["JAXUNLEARN_COMPILATION_CACHE"] = _SESSION_CACHE
    from jaxunlearn.compilation_cache import enable as _enable_compilation_cache

    _enable_compilation_cache(_SESSION_CACHE)

REPO = Path(__file__).resolve().parents[1]
VOCAB = 101

# name -> (transformers config class name, kwargs). hidden <= 128, 2-3 layers.
TINY_CONFIGS = {
    "llama_mha": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=4)),
    "llama_gqa": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2)),
    "llama_mqa": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=3)),
    "llama_tied": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_bias": (
        "LlamaConfig",
        dict(num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True),
    ),
    "llama3_rope": (
        "LlamaConfig",
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=500000.0,
            max_position_embeddings=64,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
        ),
    ),
    "qwen2_bias": ("Qwen2Config", dict(num_attention_heads=4, num_key_value_heads=2)),
    "mistral_window": (
        "MistralConfig",
        dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=4, head_dim=16),
    ),
    "phi": ("PhiConfig", dict(num_attention_heads=4, partial_rotary_factor=0.5)),
    "gpt2": ("GPT2Config", dict(num_attention_heads=4)),
    "gpt_neox": ("GPTNeoXConfig", dict(num_attention_heads=4, rotary_pct=0.25)),
    "gpt_neox_sequential": ("GPTNeoXConfig", dict(num_attention_heads=4, rotary_pct=0.5, use_parallel_residual=False)),
    "gemma": ("GemmaConfig", dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16)),
    "gemma2": (
        "Gemma2Config",
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            num_hidden_layers=3,
            sliding_window=4,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=8.0,
        ),
    ),
}
FAMILY_CONFIGS = ("phi", "gpt2", "gpt_neox", "gpt_neox_sequential", "gemma", "gemma2")


def tiny_hf_config(name: str):
    import transformers

    cls_name, kwargs = TINY_CONFIGS[name]
    base = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    base.update(kwargs)
    return getattr(transformers, cls_name)(**base)


def tiny_torch_model(name: str, seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hf_config(name), attn_implementation="eager")
    with torch.no_grad():  # larger weights than the 0.02 init: peaked, tie-free distributions
        for p in model.parameters():
            p.mul_(5.0 if p.dim() > 1 else 1.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """name -> directory holding a tiny random HF checkpoint written by transformers."""
    root = tmp_path_factory.mktemp("tiny_hf")
    cache = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = root / name
            tiny_torch_model(name).save_pretrained(out)
            cache[name] = out
        return cache[name]

    return get


def tiny_llama_config(**overrides):
    """A 2-layer Llama ModelConfig small enough for one-step tests (no tokenizer needed)."""
    from jaxunlearn.models.config import ModelConfig

    shape = dict(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
    )
    return ModelConfig(model_type="llama", **{**shape, **overrides})


def padded_batch(seed: int = 0, batch: int = 3, length: int = 11):
    """ids and a mask with a right-padded, a left-padded and a full row."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[0, -4:] = 0  # right padding
    mask[1, :3] = 0  # left padding
    return ids, mask


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (GGUF asset), loaded once."""
    import jaxunlearn

    return jaxunlearn.load_pretrained("smollm2-135m-instruct")


def run_python(code: str, *args: str, env_extra: dict | None = None, timeout: int = 600):
    """Run `python -c code args...` in a fresh process (own XLA flags, own JAX devices)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "jaxunlearn", *args], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, smollm2):
    """A tiny random Llama with SmolLM2's tokenizer, saved as an HF directory.

    Its weights, and its final norm most, are scaled up so next-token distributions are
    peaked (low entropy), which gives the unlearning tests something to change.
    """
    import jax
    from flax import nnx

    import jaxunlearn
    from jaxunlearn.models.config import ModelConfig

    tokenizer = smollm2[1]
    cfg = ModelConfig(
        model_type="llama",
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = jaxunlearn.create_model(cfg, seed=0)
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: x * 4.0 if x.ndim >= 2 else x * 10.0, state)
    model = nnx.merge(graphdef, state)
    out = tmp_path_factory.mktemp("tiny_lm") / "model"
    jaxunlearn.save_pretrained(model, tokenizer, out)
    return out


TINY_TRAIN = [
    "data.forget_split=forget01",
    "data.max_retain_rows=64",
    "data.max_length=128",
    "data.buckets=[128]",
    "train.batch_size=8",
    "train.epochs=1",
    "train.lr=1e-3",
]
# a small evaluation of the tiny model (after TINY_TRAIN, whose data.buckets it overrides)
TINY_EVAL = ["eval.num_rows=4", "eval.batch_size=4", "eval.max_length=48", "data.buckets=[64,128]"]


def start_gcs_emulator():
    """An in-memory GCS emulator (gcp-storage-emulator) on a free port, with "bucket" made;
    returns (server, its URL). Two gaps of the emulator that Orbax's tensorstore meets are
    filled: it serves one request at a time from a listen queue of 5 (tensorstore opens many
    connections at once, and the resets of a full queue break its writes), and its downloads
    lack the x-goog-generation header (tensorstore then holds a generation it refuses to
    write against: "Malformed StorageGeneration")."""
    import http.server
    import socket

    import gcp_storage_emulator.server as emulator
    from gcp_storage_emulator.handlers import objects

    if not getattr(objects.download, "with_generation", False):
        plain = objects.download

        def download(request, response, storage, *args, **kwargs):
            plain(request, response, storage, *args, **kwargs)
            if response.status.value in (200, 206):
                obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
                response["x-goog-generation"] = str(obj["generation"])
                response["x-goog-metageneration"] = str(obj["metageneration"])

        download.with_generation = True
        objects.download = download
        for _, methods in emulator.HANDLERS:
            for method, handler in list(methods.items()):
                if handler is plain:
                    methods[method] = download

    class Queued(http.server.HTTPServer):
        request_queue_size = 1024

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    original = emulator.server.HTTPServer
    emulator.server.HTTPServer = Queued
    try:
        server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="bucket")
        server.start()
    finally:
        emulator.server.HTTPServer = original
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def gcs_bucket():
    """gs://bucket on the GCS emulator, with gcsfs (etils.epath) and tensorstore (Orbax)
    pointed at it, in this process and in the children it starts."""
    pytest.importorskip("gcsfs", reason="the gcs extra (scripts/setup.sh installs it with the test extra)")
    pytest.importorskip("gcp_storage_emulator.server")
    server, url = start_gcs_emulator()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", url)
        mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
        try:
            yield "gs://bucket"
        finally:
            server.stop()
