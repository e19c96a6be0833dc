"""HF -> jaxunlearn -> HF / HF-Flax round trips keep every number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flax import nnx
from transformers import AutoModelForCausalLM

import jaxunlearn
from conftest import padded_batch
from test_model_parity import assert_close_on_tokens, torch_logits


def flat_params(model):
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("name", ["llama_tied", "qwen2_bias", "llama3_rope", "mistral_window"])
def test_hf_export_reloads_in_transformers(name, tiny_checkpoints, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints(name))
    out = jaxunlearn.save_pretrained(model, None, tmp_path / "export", format="hf")
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoints(name), attn_implementation="eager").eval()
    ids, mask = padded_batch()
    ref = torch_logits(original, ids, mask)
    np.testing.assert_array_equal(torch_logits(reloaded, ids, mask), ref)
    assert_close_on_tokens(model(ids, mask), ref, mask)
    assert reloaded.config.tie_word_embeddings == original.config.tie_word_embeddings


def test_hf_flax_roundtrip_is_bit_identical(tiny_checkpoints, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_bias"))
    flax_dir = jaxunlearn.save_pretrained(model, None, tmp_path / "flax", format="hf-flax")
    assert (flax_dir / "flax_model.msgpack").exists() and not (flax_dir / "model.safetensors").exists()
    again, _ = jaxunlearn.load_pretrained(flax_dir)
    a, b = flat_params(model), flat_params(again)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_hf_flax_layout_matches_transformers_4(tiny_checkpoints, tmp_path):
    from flax import serialization

    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    out = jaxunlearn.save_pretrained(model, None, tmp_path / "flax", format="hf-flax")
    tree = serialization.msgpack_restore((out / "flax_model.msgpack").read_bytes())
    q = tree["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"]
    assert q.shape == (64, 64)  # [in, out]
    k = tree["model"]["layers"]["1"]["self_attn"]["k_proj"]["kernel"]
    assert k.shape == (64, 32)
    assert tree["model"]["embed_tokens"]["embedding"].shape == (101, 64)
    assert tree["model"]["norm"]["weight"].shape == (64,)
    assert tree["lm_head"]["kernel"].shape == (64, 101)
    torch_q = AutoModelForCausalLM.from_pretrained(tiny_checkpoints("llama_gqa")).model.layers[0].self_attn.q_proj
    np.testing.assert_array_equal(q, torch_q.weight.detach().numpy().T)


def test_sharded_safetensors_and_bf16_export(tiny_checkpoints, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    out = jaxunlearn.save_pretrained(model, None, tmp_path / "sharded", max_shard_size="40KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again, _ = jaxunlearn.load_pretrained(out)
    for key, value in flat_params(model).items():
        np.testing.assert_array_equal(value, flat_params(again)[key])

    bf16, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"), dtype="bfloat16")
    out16 = jaxunlearn.save_pretrained(bf16, None, tmp_path / "bf16")
    reloaded = AutoModelForCausalLM.from_pretrained(out16)
    assert reloaded.model.embed_tokens.weight.dtype == torch.bfloat16


def test_torch_bin_needs_opt_in(tiny_checkpoints, tmp_path):
    torch_model = AutoModelForCausalLM.from_pretrained(tiny_checkpoints("llama_gqa"))
    out = tmp_path / "bin"
    torch_model.save_pretrained(out, safe_serialization=False) if _supports_unsafe() else _save_bin(torch_model, out)
    with pytest.raises(jaxunlearn.CheckpointError, match="pickled"):
        jaxunlearn.load_pretrained(out)
    model, _ = jaxunlearn.load_pretrained(out, allow_pickle=True)
    ref, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    for key, value in flat_params(ref).items():
        np.testing.assert_array_equal(value, flat_params(model)[key])


def _supports_unsafe() -> bool:
    import inspect

    from transformers import PreTrainedModel

    return "safe_serialization" in inspect.signature(PreTrainedModel.save_pretrained).parameters


def _save_bin(model, out):
    out.mkdir()
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
