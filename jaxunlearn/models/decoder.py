"""A configurable decoder for the families that are not Llama-shaped: Phi, GPT-2,
GPT-NeoX (Pythia), Gemma and Gemma-2. Each family file maps its config.json onto the
switches below (`ModelConfig.arch`) and gives its name table; the module is shared.

Switches (key: values, default first):
  norm            layer | rms_plus_one          (LayerNorm with bias; Gemma's (1 + w) RMSNorm)
  positions       rope | learned                (GPT-2's absolute position table)
  rotary_dim      int, default head_dim         (partial rotary on the first dims)
  qkv             separate | fused | fused_per_head
                  (GPT-2's c_attn [q | k | v]; NeoX's query_key_value per head [q k v])
  mlp             plain | gated                 (fc1 -> act -> fc2; GeGLU / SwiGLU)
  act             a key of layers.ACTIVATIONS
  residual        sequential | parallel_shared_norm | parallel
                  (Phi: attn and MLP on one norm; NeoX: on two norms of the same input)
  qkv_bias, out_bias, mlp_bias, lm_head_bias    bool
  embed_scale     bool                          (Gemma: embeddings times sqrt(hidden))
  attn_scale      float, default head_dim^-1/2  (Gemma-2: query_pre_attn_scalar^-1/2)
  attn_softcap, final_softcap   float           (Gemma-2's tanh soft-capping)
  sandwich_norms  bool                          (Gemma-2: norms after attention and MLP too)
  sliding_layers  tuple of bool per layer       (Gemma-2: which layers use the window)

Parameters are stacked on a `layers` axis and scanned, as in the Llama module, so the
training, evaluation, sharding and checkpoint code treat every family alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..errors import CheckpointError
from . import layers as L
from .cache import KVCache
from .config import ModelConfig, to_dtype
from .llama import DecoderBlocks, _linear, _param
from .outputs import CausalLMOutput
from .stack import assemble_output, head_inputs, layer_keys_values, layer_params_as, scan_layers, token_positions


def _norm_params(module, rngs, c: ModelConfig, name: str, shape_prefix: tuple, axes_prefix: tuple, dt) -> None:
    shape, axes = (*shape_prefix, c.hidden_size), (*axes_prefix, "norm")
    init = "zeros" if c.option("norm") == "rms_plus_one" else "ones"
    setattr(module, name, _param(rngs, shape, axes, dt, init))
    if c.option("norm") == "layer":
        setattr(module, f"{name}_bias", _param(rngs, shape, axes, dt, "zeros"))


class Blocks(nnx.Module):
    """Every layer's parameters, stacked on a leading `layers` axis."""

    def __init__(self, c: ModelConfig, rngs: nnx.Rngs):
        n, d, f = c.num_layers, c.hidden_size, c.intermediate_size
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        dt = to_dtype(c.param_dtype)
        lay = ("layers",)
        _norm_params(self, rngs, c, "attn_norm", (n,), lay, dt)
        if c.option("qkv") in ("fused", "fused_per_head"):
            self.qkv_proj = _param(rngs, (n, d, q + 2 * kv), ("layers", "embed", "heads"), dt)
            if c.option("qkv_bias"):
                self.qkv_bias = _param(rngs, (n, q + 2 * kv), ("layers", "heads"), dt, "zeros")
        else:
            self.q_proj = _param(rngs, (n, d, q), ("layers", "embed", "heads"), dt)
            self.k_proj = _param(rngs, (n, d, kv), ("layers", "embed", "kv_heads"), dt)
            self.v_proj = _param(rngs, (n, d, kv), ("layers", "embed", "kv_heads"), dt)
            if c.option("qkv_bias"):
                self.q_bias = _param(rngs, (n, q), ("layers", "heads"), dt, "zeros")
                self.k_bias = _param(rngs, (n, kv), ("layers", "kv_heads"), dt, "zeros")
                self.v_bias = _param(rngs, (n, kv), ("layers", "kv_heads"), dt, "zeros")
        self.o_proj = _param(rngs, (n, q, d), ("layers", "heads", "embed"), dt)
        if c.option("out_bias"):
            self.o_bias = _param(rngs, (n, d), ("layers", "norm"), dt, "zeros")
        if c.option("residual", "sequential") != "parallel_shared_norm":
            _norm_params(self, rngs, c, "mlp_norm", (n,), lay, dt)
        if c.option("sandwich_norms"):
            _norm_params(self, rngs, c, "post_attn_norm", (n,), lay, dt)
            _norm_params(self, rngs, c, "post_mlp_norm", (n,), lay, dt)
        if c.option("mlp") == "gated":
            self.gate_proj = _param(rngs, (n, d, f), ("layers", "embed", "mlp"), dt)
        self.up_proj = _param(rngs, (n, d, f), ("layers", "embed", "mlp"), dt)
        self.down_proj = _param(rngs, (n, f, d), ("layers", "mlp", "embed"), dt)
        if c.option("mlp_bias"):
            if c.option("mlp") == "gated":
                self.gate_bias = _param(rngs, (n, f), ("layers", "mlp"), dt, "zeros")
            self.up_bias = _param(rngs, (n, f), ("layers", "mlp"), dt, "zeros")
            self.down_bias = _param(rngs, (n, d), ("layers", "norm"), dt, "zeros")

    arrays = DecoderBlocks.arrays  # every stacked Param by name, as in the Llama module


def norm(c: ModelConfig, p: dict, name: str, x):
    if c.option("norm") == "rms_plus_one":
        return L.rms_norm_plus_one(x, p[name], c.rms_norm_eps)
    return L.layer_norm(x, p[name], p.get(f"{name}_bias"), c.rms_norm_eps)


def _qkv(c: ModelConfig, p: dict, x):
    b, t, _ = x.shape
    h, kvh, hd = c.num_heads, c.num_kv_heads, c.head_dim
    if c.option("qkv") == "fused":  # [q | k | v] along the features
        qkv = _linear(x, p["qkv_proj"], p.get("qkv_bias"))
        q, k, v = jnp.split(qkv, [h * hd, (h + kvh) * hd], axis=-1)
    elif c.option("qkv") == "fused_per_head":  # per head [q k v]
        qkv = _linear(x, p["qkv_proj"], p.get("qkv_bias")).reshape(b, t, h, 3 * hd)
        q, k, v = jnp.split(qkv, 3, axis=-1)
    else:
        q = _linear(x, p["q_proj"], p.get("q_bias"))
        k = _linear(x, p["k_proj"], p.get("k_bias"))
        v = _linear(x, p["v_proj"], p.get("v_bias"))
    return q.reshape(b, t, h, hd), k.reshape(b, t, kvh, hd), v.reshape(b, t, kvh, hd)


def _rope(x, cos, sin, rotary_dim: int):
    if rotary_dim == x.shape[-1]:
        return L.apply_rope(x, cos, sin)
    return jnp.concatenate([L.apply_rope(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]], axis=-1)


def _mlp(c: ModelConfig, p: dict, x):
    act = L.ACTIVATIONS[c.option("act")]
    up = _linear(x, p["up_proj"], p.get("up_bias"))
    if c.option("mlp") == "gated":
        up = act(_linear(x, p["gate_proj"], p.get("gate_bias"))) * up
    else:
        up = act(up)
    return _linear(up, p["down_proj"], p.get("down_bias"))


def block(c: ModelConfig, p: dict, h, rope, allowed, cache_kv, cache_index):
    """One decoder layer with the configured norm placement and residual wiring."""
    b, t, _ = h.shape
    x = norm(c, p, "attn_norm", h)
    q, k, v = _qkv(c, p, x)
    if rope is not None:
        cos, sin = rope
        rot = cos.shape[-1]
        q, k = _rope(q, cos, sin, rot), _rope(k, cos, sin, rot)
    cache_kv, k, v = layer_keys_values(cache_kv, k, v, cache_index)
    attn = L.dot_product_attention(
        q, k.astype(q.dtype), v.astype(q.dtype), allowed, scale=c.option("attn_scale"), softcap=c.option("attn_softcap")
    )
    attn = _linear(attn.reshape(b, t, -1), p["o_proj"], p.get("o_bias"))
    residual = c.option("residual", "sequential")
    if residual == "parallel_shared_norm":
        return h + attn + _mlp(c, p, x), cache_kv
    if residual == "parallel":
        return h + attn + _mlp(c, p, norm(c, p, "mlp_norm", h)), cache_kv
    if c.option("sandwich_norms"):
        attn = norm(c, p, "post_attn_norm", attn)
    h = h + attn
    m = _mlp(c, p, norm(c, p, "mlp_norm", h))
    if c.option("sandwich_norms"):
        m = norm(c, p, "post_mlp_norm", m)
    return h + m, cache_kv


class DecoderForCausalLM(nnx.Module):
    """Decoder-only LM; `model(input_ids, attention_mask=...)` returns fp32 logits [B, T, V]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        if c.option("norm") not in ("layer", "rms_plus_one"):
            raise CheckpointError(f"internal: {c.model_type} config lacks a norm switch (arch={c.arch})")
        dt = to_dtype(c.param_dtype)
        self.embed = _param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), dt)
        if c.option("positions") == "learned":
            self.pos_embed = _param(rngs, (c.max_position_embeddings, c.hidden_size), ("positions", "embed"), dt)
        self.layers = Blocks(c, rngs)
        _norm_params(self, rngs, c, "final_norm", (), (), dt)
        if not c.tie_word_embeddings:
            self.lm_head = _param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), dt)
        if c.option("lm_head_bias"):
            self.lm_head_bias = _param(rngs, (c.vocab_size,), ("vocab",), dt, "zeros")

    def __call__(self, input_ids, attention_mask=None, positions=None):
        return self.forward(input_ids, attention_mask, positions).logits

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> KVCache:
        c = self.config
        return KVCache.zeros(
            c.num_layers, batch_size, max_length, c.num_kv_heads, c.head_dim, to_dtype(dtype or c.dtype)
        )

    def forward(
        self,
        input_ids,
        attention_mask=None,
        positions=None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        layer_params: list[dict] | None = None,
        logits_to_keep: int | jax.Array = 0,
    ) -> CausalLMOutput:
        """As LlamaForCausalLM.forward."""
        c = self.config
        dt = to_dtype(c.dtype)
        t = input_ids.shape[1]
        attention_mask, positions, key_valid, key_pos, start = token_positions(
            input_ids, attention_mask, positions, cache
        )
        allowed = L.attention_mask(positions, key_pos, key_valid, None)
        sliding = c.option("sliding_layers")
        local = L.attention_mask(positions, key_pos, key_valid, c.sliding_window) if sliding else allowed

        rope = None
        if c.option("positions", "rope") == "rope":
            rot = c.option("rotary_dim") or c.head_dim
            rope = L.rope_cos_sin(positions, L.rope_inv_freq(rot, c.rope_theta, c.rope_scaling_dict), dt)

        embed = self.embed[...]
        h = jnp.take(embed, input_ids, axis=0)
        if c.option("embed_scale"):
            h = h * jnp.asarray(c.hidden_size**0.5, embed.dtype)
        if c.option("positions") == "learned":
            h = h + jnp.take(self.pos_embed[...], positions, axis=0)
        h = h.astype(dt)
        block_params = layer_params_as(self.layers.arrays(), layer_params, dt)
        is_local = jnp.asarray(sliding or (False,) * c.num_layers, bool)

        def layer(p, h, layer_cache, use_local):
            mask = jnp.where(use_local, local, allowed) if sliding else allowed
            return block(c, p, h, rope, mask, layer_cache, start)

        h_emb = h
        h, per_layer, kv_out = scan_layers(c, layer, h, block_params, cache, is_local, output_hidden_states)
        final = {"final_norm": self.final_norm[...].astype(dt)}
        if c.option("norm") == "layer":
            final["final_norm_bias"] = self.final_norm_bias[...].astype(dt)
        h = norm(c, final, "final_norm", h)
        head = embed.T if c.tie_word_embeddings else self.lm_head[...]
        logits = jnp.einsum(
            "btd,dv->btv", head_inputs(h, logits_to_keep), head.astype(dt), preferred_element_type=jnp.float32
        )
        if c.option("lm_head_bias"):
            logits = logits + self.lm_head_bias[...].astype(jnp.float32)
        if c.option("final_softcap"):
            cap = c.option("final_softcap")
            logits = jnp.tanh(logits / cap) * cap
        return assemble_output(logits, h_emb, per_layer, h, kv_out, key_valid, key_pos, start, t, output_hidden_states)
