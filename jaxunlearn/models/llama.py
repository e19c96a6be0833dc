"""The Llama family in Flax NNX: Llama-2, Llama-3.x, Mistral, Qwen2, SmolLM2.

Layer parameters are stacked on a leading `layers` axis and run with `jax.lax.scan`, so a
30-layer model compiles as fast as a 1-layer one and per-block rematerialization is one
`jax.checkpoint` around the scanned body. Every parameter carries `logical_axes`
metadata that `jaxunlearn.parallel` maps onto a mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from . import layers as L
from .cache import KVCache
from .config import ModelConfig, to_dtype
from .outputs import CausalLMOutput
from .stack import assemble_output, head_inputs, layer_keys_values, layer_params_as, scan_layers, token_positions

# (jaxunlearn parameter path, HF safetensors name, GGUF name, kind). "{i}" is a layer index
# for parameters stacked on the `layers` axis. The kind fixes the layout conversion:
# "linear" is stored [out, in] by HF and [in, out] here (and in HF-Flax, as `kernel`).
NAME_TABLE = (
    ("embed", "model.embed_tokens.weight", "token_embd.weight", "embedding"),
    ("layers/attn_norm", "model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight", "norm"),
    ("layers/q_proj", "model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight", "linear"),
    ("layers/q_bias", "model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias", "bias"),
    ("layers/k_proj", "model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight", "linear"),
    ("layers/k_bias", "model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias", "bias"),
    ("layers/v_proj", "model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight", "linear"),
    ("layers/v_bias", "model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias", "bias"),
    ("layers/o_proj", "model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight", "linear"),
    ("layers/o_bias", "model.layers.{i}.self_attn.o_proj.bias", "blk.{i}.attn_output.bias", "bias"),
    ("layers/mlp_norm", "model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight", "norm"),
    ("layers/gate_proj", "model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", "linear"),
    ("layers/gate_bias", "model.layers.{i}.mlp.gate_proj.bias", "blk.{i}.ffn_gate.bias", "bias"),
    ("layers/up_proj", "model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight", "linear"),
    ("layers/up_bias", "model.layers.{i}.mlp.up_proj.bias", "blk.{i}.ffn_up.bias", "bias"),
    ("layers/down_proj", "model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight", "linear"),
    ("layers/down_bias", "model.layers.{i}.mlp.down_proj.bias", "blk.{i}.ffn_down.bias", "bias"),
    ("final_norm", "model.norm.weight", "output_norm.weight", "norm"),
    ("lm_head", "lm_head.weight", "output.weight", "linear"),
)


def _param(rngs: nnx.Rngs, shape, axes, dtype, init="normal"):
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=axes)


class DecoderBlocks(nnx.Module):
    """All decoder layers' parameters, stacked on a leading `layers` axis."""

    def __init__(self, c: ModelConfig, rngs: nnx.Rngs):
        n, d, f = c.num_layers, c.hidden_size, c.intermediate_size
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        dt = to_dtype(c.param_dtype)
        self.attn_norm = _param(rngs, (n, d), ("layers", "norm"), dt, "ones")
        self.q_proj = _param(rngs, (n, d, q), ("layers", "embed", "heads"), dt)
        self.k_proj = _param(rngs, (n, d, kv), ("layers", "embed", "kv_heads"), dt)
        self.v_proj = _param(rngs, (n, d, kv), ("layers", "embed", "kv_heads"), dt)
        self.o_proj = _param(rngs, (n, q, d), ("layers", "heads", "embed"), dt)
        if c.attention_bias:
            self.q_bias = _param(rngs, (n, q), ("layers", "heads"), dt, "zeros")
            self.k_bias = _param(rngs, (n, kv), ("layers", "kv_heads"), dt, "zeros")
            self.v_bias = _param(rngs, (n, kv), ("layers", "kv_heads"), dt, "zeros")
        if c.attention_out_bias:
            self.o_bias = _param(rngs, (n, d), ("layers", "norm"), dt, "zeros")
        self.mlp_norm = _param(rngs, (n, d), ("layers", "norm"), dt, "ones")
        self.gate_proj = _param(rngs, (n, d, f), ("layers", "embed", "mlp"), dt)
        self.up_proj = _param(rngs, (n, d, f), ("layers", "embed", "mlp"), dt)
        self.down_proj = _param(rngs, (n, f, d), ("layers", "mlp", "embed"), dt)
        if c.mlp_bias:
            self.gate_bias = _param(rngs, (n, f), ("layers", "mlp"), dt, "zeros")
            self.up_bias = _param(rngs, (n, f), ("layers", "mlp"), dt, "zeros")
            self.down_bias = _param(rngs, (n, d), ("layers", "norm"), dt, "zeros")

    def arrays(self) -> dict[str, jax.Array]:
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


def _linear(x, w, b=None):
    y = x @ w
    return y if b is None else y + b


def decoder_block(c: ModelConfig, p: dict, h, cos, sin, allowed, cache_kv, cache_index):
    """One pre-norm decoder layer: h + attn(norm(h)), then + mlp(norm(.))."""
    b, t, _ = h.shape
    x = L.rms_norm(h, p["attn_norm"], c.rms_norm_eps)
    q = _linear(x, p["q_proj"], p.get("q_bias")).reshape(b, t, c.num_heads, c.head_dim)
    k = _linear(x, p["k_proj"], p.get("k_bias")).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = _linear(x, p["v_proj"], p.get("v_bias")).reshape(b, t, c.num_kv_heads, c.head_dim)
    q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
    cache_kv, k, v = layer_keys_values(cache_kv, k, v, cache_index)
    attn = L.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), allowed)
    h = h + _linear(attn.reshape(b, t, -1), p["o_proj"], p.get("o_bias"))
    x = L.rms_norm(h, p["mlp_norm"], c.rms_norm_eps)
    gate = _linear(x, p["gate_proj"], p.get("gate_bias"))
    up = _linear(x, p["up_proj"], p.get("up_bias"))
    h = h + _linear(jax.nn.silu(gate) * up, p["down_proj"], p.get("down_bias"))
    return h, cache_kv


class LlamaForCausalLM(nnx.Module):
    """Decoder-only LM; `model(input_ids, attention_mask=...)` returns fp32 logits [B, T, V]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dt = to_dtype(c.param_dtype)
        self.embed = _param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), dt)
        self.layers = DecoderBlocks(c, rngs)
        self.final_norm = _param(rngs, (c.hidden_size,), ("norm",), dt, "ones")
        if not c.tie_word_embeddings:
            self.lm_head = _param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), dt)

    def __call__(self, input_ids, attention_mask=None, positions=None):
        return self.forward(input_ids, attention_mask, positions).logits

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> KVCache:
        c = self.config
        return KVCache.zeros(
            c.num_layers,
            batch_size,
            max_length,
            c.num_kv_heads,
            c.head_dim,
            to_dtype(dtype or c.dtype),
        )

    def forward(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        layer_params: list[dict] | None = None,
        logits_to_keep: int | jax.Array = 0,
    ) -> CausalLMOutput:
        """Logits (and the cache continued, hidden states if asked). layer_params: per-layer
        parameters from `stack.unstack_layers` to run the layers unrolled (decoding, with a
        per-layer cache); None runs the model's stacked layers in a scan. logits_to_keep:
        logits of the last k positions only (0: all), as in transformers, or of the
        positions in an int array [B, K]. attention_mask: [B, T] real tokens, or [B, T, T]
        the keys each query sees (no cache; pass positions), e.g. prefix trees."""
        c = self.config
        dt = to_dtype(c.dtype)
        t = input_ids.shape[1]
        attention_mask, positions, key_valid, key_pos, start = token_positions(
            input_ids, attention_mask, positions, cache
        )
        allowed = L.attention_mask(positions, key_pos, key_valid, c.sliding_window)

        inv_freq = L.rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling_dict)
        cos, sin = L.rope_cos_sin(positions, inv_freq, dt)

        embed = self.embed[...]
        h = jnp.take(embed, input_ids, axis=0).astype(dt)
        block_params = layer_params_as(self.layers.arrays(), layer_params, dt)

        def block(p, h, layer_cache, _):
            return decoder_block(c, p, h, cos, sin, allowed, layer_cache, start)

        h_emb = h
        h, per_layer, kv_out = scan_layers(c, block, h, block_params, cache, None, output_hidden_states)
        h = L.rms_norm(h, self.final_norm[...].astype(dt), c.rms_norm_eps)
        head = embed.T if c.tie_word_embeddings else self.lm_head[...]
        logits = jnp.einsum(
            "btd,dv->btv", head_inputs(h, logits_to_keep), head.astype(dt), preferred_element_type=jnp.float32
        )
        return assemble_output(logits, h_emb, per_layer, h, kv_out, key_valid, key_pos, start, t, output_hidden_states)
