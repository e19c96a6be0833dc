"""The one configurable decoder of every family: Llama, Mistral, Qwen2, Phi, GPT-2,
GPT-NeoX (Pythia), Gemma and Gemma-2. Each family file maps its config.json onto the
switches of `config.Architecture` (`ModelConfig.arch`; the defaults are Llama's) and
gives its name table; the module is shared.

Parameters are stacked on a `layers` axis and scanned (a 30-layer model compiles as fast
as one layer; per-block remat is one `jax.checkpoint` around the scanned body), and every
parameter carries `logical_axes` metadata that `jaxunlearn.parallel` maps onto a mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from . import layers as L
from .attention_kernels import fused_attention, kernel_for
from .cache import KVCache
from .config import ModelConfig, to_dtype
from .outputs import CausalLMOutput
from .vocab_head import HeadSpec, VocabHead, block_size
from .stack import assemble_output, head_inputs, layer_keys_values, layer_params_as, scan_layers, token_positions


def _norm_params(module, rngs, c: ModelConfig, name: str, shape_prefix: tuple, axes_prefix: tuple, dt) -> None:
    shape, axes = (*shape_prefix, c.hidden_size), (*axes_prefix, "norm")
    init = "zeros" if c.arch.norm == "rms_plus_one" else "ones"  # Gemma stores w of (1 + w)
    setattr(module, name, L.param(rngs, shape, axes, dt, init))
    if c.arch.norm == "layer":
        setattr(module, f"{name}_bias", L.param(rngs, shape, axes, dt, "zeros"))


class Blocks(nnx.Module):
    """Every layer's parameters, stacked on a leading `layers` axis."""

    def __init__(self, c: ModelConfig, rngs: nnx.Rngs):
        n, d, f = c.num_layers, c.hidden_size, c.intermediate_size
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        dt = to_dtype(c.param_dtype)
        lay = ("layers",)
        _norm_params(self, rngs, c, "attn_norm", (n,), lay, dt)
        if c.arch.qkv in ("fused", "fused_per_head"):
            self.qkv_proj = L.param(rngs, (n, d, q + 2 * kv), ("layers", "embed", "heads"), dt)
            if c.arch.qkv_bias:
                self.qkv_bias = L.param(rngs, (n, q + 2 * kv), ("layers", "heads"), dt, "zeros")
        else:
            self.q_proj = L.param(rngs, (n, d, q), ("layers", "embed", "heads"), dt)
            self.k_proj = L.param(rngs, (n, d, kv), ("layers", "embed", "kv_heads"), dt)
            self.v_proj = L.param(rngs, (n, d, kv), ("layers", "embed", "kv_heads"), dt)
            if c.arch.qkv_bias:
                self.q_bias = L.param(rngs, (n, q), ("layers", "heads"), dt, "zeros")
                self.k_bias = L.param(rngs, (n, kv), ("layers", "kv_heads"), dt, "zeros")
                self.v_bias = L.param(rngs, (n, kv), ("layers", "kv_heads"), dt, "zeros")
        self.o_proj = L.param(rngs, (n, q, d), ("layers", "heads", "embed"), dt)
        if c.arch.out_bias:
            self.o_bias = L.param(rngs, (n, d), ("layers", "norm"), dt, "zeros")
        if c.arch.residual != "parallel_shared_norm":
            _norm_params(self, rngs, c, "mlp_norm", (n,), lay, dt)
        if c.arch.sandwich_norms:
            _norm_params(self, rngs, c, "post_attn_norm", (n,), lay, dt)
            _norm_params(self, rngs, c, "post_mlp_norm", (n,), lay, dt)
        if c.arch.mlp == "gated":
            self.gate_proj = L.param(rngs, (n, d, f), ("layers", "embed", "mlp"), dt)
        self.up_proj = L.param(rngs, (n, d, f), ("layers", "embed", "mlp"), dt)
        self.down_proj = L.param(rngs, (n, f, d), ("layers", "mlp", "embed"), dt)
        if c.arch.mlp_bias:
            if c.arch.mlp == "gated":
                self.gate_bias = L.param(rngs, (n, f), ("layers", "mlp"), dt, "zeros")
            self.up_bias = L.param(rngs, (n, f), ("layers", "mlp"), dt, "zeros")
            self.down_bias = L.param(rngs, (n, d), ("layers", "norm"), dt, "zeros")

    def arrays(self) -> dict[str, jax.Array]:
        """Every stacked Param by name (what the layer scan slices)."""
        return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}


def norm(c: ModelConfig, p: dict, name: str, x):
    if c.arch.norm == "rms":
        return L.rms_norm(x, p[name], c.norm_eps)
    if c.arch.norm == "rms_plus_one":
        return L.rms_norm_plus_one(x, p[name], c.norm_eps)
    return L.layer_norm(x, p[name], p.get(f"{name}_bias"), c.norm_eps)


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def proj(c: ModelConfig, p: dict, name: str, x, bias=None, dropout_key=None):
    """x @ W (+ b), plus the low-rank adapter's scale * (dropout(x) @ A) @ B when the model
    has one on this projection (models.lora); dropout only when a key is given (training).
    Decoding's per-layer weights may hold W transposed under `<name>_t` (stack.unstack_layers).
    """
    w = p.get(name)
    y = L.linear(x, w, bias) if w is not None else L.linear_transposed(x, p[f"{name}_t"], bias)
    a = p.get(f"{name}_lora_a")
    if a is None:
        return y
    if dropout_key is not None and c.lora.dropout > 0:
        keep = 1.0 - c.lora.dropout
        mask = jax.random.bernoulli(jax.random.fold_in(dropout_key, PROJECTIONS.index(name)), keep, x.shape)
        x = jnp.where(mask, x / keep, 0).astype(x.dtype)
    return y + ((x @ a) @ p[f"{name}_lora_b"]) * jnp.asarray(c.lora.scale, y.dtype)


def _qkv(c: ModelConfig, p: dict, x, key=None):
    b, t, _ = x.shape
    h, kvh, hd = c.num_heads, c.num_kv_heads, c.head_dim
    if c.arch.qkv == "fused":  # [q | k | v] along the features
        qkv = proj(c, p, "qkv_proj", x, p.get("qkv_bias"), key)
        q, k, v = jnp.split(qkv, [h * hd, (h + kvh) * hd], axis=-1)
    elif c.arch.qkv == "fused_per_head":  # per head [q k v]
        qkv = proj(c, p, "qkv_proj", x, p.get("qkv_bias"), key).reshape(b, t, h, 3 * hd)
        q, k, v = jnp.split(qkv, 3, axis=-1)
    else:
        q = proj(c, p, "q_proj", x, p.get("q_bias"), key)
        k = proj(c, p, "k_proj", x, p.get("k_bias"), key)
        v = proj(c, p, "v_proj", x, p.get("v_bias"), key)
    return q.reshape(b, t, h, hd), k.reshape(b, t, kvh, hd), v.reshape(b, t, kvh, hd)


def _rope(x, cos, sin, rotary_dim: int):
    if rotary_dim == x.shape[-1]:
        return L.apply_rope(x, cos, sin)
    return jnp.concatenate([L.apply_rope(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]], axis=-1)


def _mlp(c: ModelConfig, p: dict, x, key=None):
    act = L.ACTIVATIONS[c.arch.act]
    up = proj(c, p, "up_proj", x, p.get("up_bias"), key)
    if c.arch.mlp == "gated":
        up = act(proj(c, p, "gate_proj", x, p.get("gate_bias"), key)) * up
    else:
        up = act(up)
    return proj(c, p, "down_proj", up, p.get("down_bias"), key)


def block(c: ModelConfig, p: dict, h, rope, allowed, cache_kv, cache_index, key=None, kernel=None, query_blocks=1):
    """One decoder layer with the configured norm placement and residual wiring (`key`:
    this layer's LoRA-dropout key, training only; `kernel`: (fused attention kernel, key
    lengths [B]) for a right-padded causal forward, else the XLA path, with `query_blocks`
    as L.dot_product_attention takes it)."""
    b, t, _ = h.shape
    x = norm(c, p, "attn_norm", h)
    q, k, v = _qkv(c, p, x, key)
    if rope is not None:
        cos, sin = rope
        rot = cos.shape[-1]
        q, k = _rope(q, cos, sin, rot), _rope(k, cos, sin, rot)
    if kernel is not None:
        scale = c.arch.attn_scale if c.arch.attn_scale is not None else c.head_dim**-0.5
        attn = fused_attention(kernel[0], q, k.astype(q.dtype), v.astype(q.dtype), kernel[1], scale)
    else:
        cache_kv, k, v = layer_keys_values(cache_kv, k, v, cache_index)
        attn = L.dot_product_attention(
            q,
            k.astype(q.dtype),
            v.astype(q.dtype),
            allowed,
            scale=c.arch.attn_scale,
            softcap=c.arch.attn_softcap,
            query_blocks=query_blocks,
        )
    attn = proj(c, p, "o_proj", attn.reshape(b, t, -1), p.get("o_bias"), key)
    residual = c.arch.residual
    if residual == "parallel_shared_norm":
        return h + attn + _mlp(c, p, x, key), cache_kv
    if residual == "parallel":
        return h + attn + _mlp(c, p, norm(c, p, "mlp_norm", h), key), cache_kv
    if c.arch.sandwich_norms:
        attn = norm(c, p, "post_attn_norm", attn)
    h = h + attn
    m = _mlp(c, p, norm(c, p, "mlp_norm", h), key)
    if c.arch.sandwich_norms:
        m = norm(c, p, "post_mlp_norm", m)
    return h + m, cache_kv


class DecoderForCausalLM(nnx.Module):
    """Decoder-only LM; `model(input_ids, attention_mask=...)` returns fp32 logits [B, T, V]."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        dt = to_dtype(c.param_dtype)
        self.embed = L.param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), dt)
        if c.arch.positions == "learned":
            self.pos_embed = L.param(rngs, (c.max_position_embeddings, c.hidden_size), ("positions", "embed"), dt)
        self.layers = Blocks(c, rngs)
        _norm_params(self, rngs, c, "final_norm", (), (), dt)
        if not c.tie_word_embeddings:
            self.lm_head = L.param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), dt)
        if c.arch.lm_head_bias:
            self.lm_head_bias = L.param(rngs, (c.vocab_size,), ("vocab",), dt, "zeros")

    def __call__(self, input_ids, attention_mask=None, positions=None):
        return self.forward(input_ids, attention_mask, positions).logits

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> KVCache:
        c = self.config
        return KVCache.zeros(
            c.num_layers, batch_size, max_length, c.num_kv_heads, c.head_dim, to_dtype(dtype or c.compute_dtype)
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
        dropout_key=None,
        vocab_chunk: int = 0,
        right_padded: bool = False,
        query_blocks: int = 1,
    ) -> CausalLMOutput:
        """As LlamaForCausalLM.forward; `dropout_key` turns on LoRA dropout (training).
        vocab_chunk > 0: no logits; `head` (a VocabHead) for blockwise statistics over blocks
        of about that many vocabulary columns (models.vocab_head). right_padded: the caller
        vouches that attention_mask [B, T] is ones then zeros in every row, so a fused
        attention kernel may serve (models.attention_kernels, config.attention).
        query_blocks > 1: the caller vouches that no token sees a later slot and each sees
        one at least, so attention skips the blocks above the diagonal
        (L.dot_product_attention; prefix-tree scoring)."""
        c = self.config
        dt = to_dtype(c.compute_dtype)
        t = input_ids.shape[1]
        kernel = None
        if right_padded and cache is None and positions is None and attention_mask is not None:
            impl = kernel_for(
                c.attention,
                seq_len=t,
                head_dim=c.head_dim,
                dtype=dt,
                softcap=c.arch.attn_softcap,
                sliding_window=c.sliding_window,
            )
            kernel = None if impl is None else (impl, attention_mask.astype(jnp.int32).sum(-1))
        attention_mask, positions, key_valid, key_pos, start = token_positions(
            input_ids, attention_mask, positions, cache
        )
        sliding = c.arch.sliding_layers  # per layer (Gemma-2); else the window, if any, on every layer (Mistral)
        allowed = L.attention_mask(positions, key_pos, key_valid, None if sliding else c.sliding_window)
        local = L.attention_mask(positions, key_pos, key_valid, c.sliding_window) if sliding else allowed

        rope = None
        if c.arch.positions == "rope":
            rot = c.arch.rotary_dim or c.head_dim
            rope = L.rope_cos_sin(positions, L.rope_inv_freq(rot, c.rope_theta, c.rope_scaling_dict), dt)

        embed = self.embed[...]
        h = jnp.take(embed, input_ids, axis=0)
        if c.arch.embed_scale:
            h = h * jnp.asarray(c.hidden_size**0.5, embed.dtype)
        if c.arch.positions == "learned":
            h = h + jnp.take(self.pos_embed[...], positions, axis=0)
        h = h.astype(dt)
        block_params = layer_params_as(self.layers.arrays(), layer_params, dt)
        per_layer_x = {"local": jnp.asarray(sliding or (False,) * c.num_layers, bool)}
        if dropout_key is not None and c.lora is not None and c.lora.dropout > 0:
            per_layer_x["key"] = jax.random.split(dropout_key, c.num_layers)

        def layer(p, h, layer_cache, x):
            mask = jnp.where(x["local"], local, allowed) if sliding else allowed
            return block(c, p, h, rope, mask, layer_cache, start, x.get("key"), kernel, query_blocks)

        h_emb = h
        h, per_layer, kv_out = scan_layers(c, layer, h, block_params, cache, per_layer_x, output_hidden_states)
        final = {"final_norm": self.final_norm[...].astype(dt)}
        if c.arch.norm == "layer":
            final["final_norm_bias"] = self.final_norm_bias[...].astype(dt)
        h = norm(c, final, "final_norm", h)
        spec = HeadSpec(
            c.vocab_size,
            vocab_axis=0 if c.tie_word_embeddings else 1,
            softcap=float(c.arch.final_softcap or 0.0),
            chunk=block_size(c.vocab_size, vocab_chunk or c.vocab_size),
        )
        weight = embed if c.tie_word_embeddings else self.lm_head[...]
        bias = self.lm_head_bias[...] if c.arch.lm_head_bias else None
        head = VocabHead(head_inputs(h, logits_to_keep), weight.astype(dt), bias, spec)
        out = assemble_output(
            None if vocab_chunk else head.logits(),
            h_emb,
            per_layer,
            h,
            kv_out,
            key_valid,
            key_pos,
            start,
            t,
            output_hidden_states,
        )
        return out.replace(head=head) if vocab_chunk else out
