"""Logits of the NNX models against transformers' PyTorch models (fp32, padded batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jaxunlearn
from conftest import TINY_CONFIGS, padded_batch, tiny_torch_model

TOL = 1e-4


@pytest.fixture(autouse=True)
def fp32_matmuls():
    """fp32 parity needs exact fp32 matmuls (JAX's default is TF32 on GPUs, bf16 passes on TPUs)."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield


def torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()


def assert_close_on_tokens(ours, ref, mask):
    """Compare logits at every real (non-padding) position."""
    diff = np.abs(np.asarray(ours) - ref)[mask.astype(bool)]
    assert diff.max() <= TOL, f"max |diff| {diff.max():.2e} > {TOL}"


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_logits_match_transformers(name, tiny_checkpoints):
    path = tiny_checkpoints(name)
    model, _ = jaxunlearn.load_pretrained(path)
    ids, mask = padded_batch()
    ref = torch_logits(tiny_torch_model(name), ids, mask)
    ours = model(ids, attention_mask=mask)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert_close_on_tokens(ours, ref, mask)


def test_config_reads_family_specifics(tiny_checkpoints):
    qwen, _ = jaxunlearn.load_pretrained(tiny_checkpoints("qwen2_bias"))
    assert qwen.config.arch.qkv_bias and not qwen.config.arch.out_bias
    mistral, _ = jaxunlearn.load_pretrained(tiny_checkpoints("mistral_window"))
    assert mistral.config.sliding_window == 4
    llama3, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama3_rope"))
    assert llama3.config.rope_scaling_dict["rope_type"] == "llama3"
    tied, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_tied"))
    assert not hasattr(tied, "lm_head")


def test_every_parameter_has_logical_axes(tiny_checkpoints):
    from flax import nnx

    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_bias"))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var.get_value().ndim, path


def test_remat_and_bf16_compute_options(tiny_checkpoints):
    """Remat changes nothing numerically; bf16 compute stays close to fp32."""
    path = tiny_checkpoints("llama_gqa")
    ids, mask = padded_batch()
    base, _ = jaxunlearn.load_pretrained(path)
    remat, _ = jaxunlearn.load_pretrained(path, remat="full")
    np.testing.assert_allclose(np.asarray(remat(ids, mask)), np.asarray(base(ids, mask)), atol=1e-5)
    bf16, _ = jaxunlearn.load_pretrained(path, dtype="bfloat16")
    assert bf16.embed.get_value().dtype == np.dtype("bfloat16")
    lo = np.asarray(bf16(ids, mask))[mask.astype(bool)]
    hi = np.asarray(base(ids, mask))[mask.astype(bool)]
    assert np.mean(np.argmax(lo, -1) == np.argmax(hi, -1)) > 0.9


def test_per_query_mask_and_logits_at_positions(tiny_checkpoints):
    """A [B, T, T] causal mask gives the [B, T] mask's logits; logits_to_keep as an int keeps
    the last k, as an array [B, K] those positions of each row; a per-query mask cannot
    continue a KV cache."""
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    ids, mask = padded_batch()
    b, t = ids.shape
    full = np.asarray(model.forward(ids, mask).logits)
    causal = np.tril(np.ones((t, t), bool))[None] & mask.astype(bool)[:, None, :]
    np.testing.assert_allclose(
        np.asarray(model.forward(ids, causal).logits)[mask.astype(bool)], full[mask.astype(bool)], atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(model.forward(ids, mask, logits_to_keep=2).logits), full[:, -2:], atol=1e-6)
    at = np.array([[3, 0, t - 1]] * b, np.int32)
    np.testing.assert_allclose(
        np.asarray(model.forward(ids, mask, logits_to_keep=at).logits),
        np.take_along_axis(full, at[..., None], axis=1),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="cannot continue a KV cache"):
        model.forward(ids, causal, cache=model.init_cache(b, t + 4))
