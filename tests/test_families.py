"""Phi, GPT-2, GPT-NeoX and Gemma(-2): the guarantees Llama has, through the same code.

Logits parity with transformers runs for every family in test_model_parity (TINY_CONFIGS);
here: HF export reloaded by transformers, HF-Flax round trip, KV-cache decoding, one
unlearning step and one evaluation pass.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from transformers import AutoModelForCausalLM

import jaxunlearn
from conftest import FAMILY_CONFIGS, padded_batch
from jaxunlearn.evaluation.kernels import generate_texts, score_rows
from jaxunlearn.evaluation.prefix_trees import score_prefix_trees
from jaxunlearn.objectives import StepBatch, build_objective
from jaxunlearn.parallel import make_mesh
from jaxunlearn.training.optimizer import make_optimizer
from jaxunlearn.training.step import init_state, jit_train_step, make_train_step, place_batch, place_params
from test_checkpoint_roundtrip import flat_params
from test_evaluation import _rows
from test_generation import assert_kv_cache_matches_full_forward
from test_model_parity import torch_logits


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_hf_export_reloads_in_transformers(name, tiny_checkpoints, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints(name))
    out = jaxunlearn.save_pretrained(model, None, tmp_path / "hf", format="hf")
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_checkpoints(name), attn_implementation="eager").eval()
    assert type(reloaded) is type(original)
    ids, mask = padded_batch()
    np.testing.assert_array_equal(torch_logits(reloaded, ids, mask), torch_logits(original, ids, mask))


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_hf_flax_roundtrip_is_bit_identical(name, tiny_checkpoints, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints(name))
    again, _ = jaxunlearn.load_pretrained(jaxunlearn.save_pretrained(model, None, tmp_path / "f", format="hf-flax"))
    a, b = flat_params(model), flat_params(again)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_kv_cache_decoding_matches_full_forward(name, tiny_checkpoints):
    assert_kv_cache_matches_full_forward(jaxunlearn.load_pretrained(tiny_checkpoints(name))[0])


def _stream(seed: int, batch: int = 2, length: int = 12):
    rows = _rows(seed, n=batch)
    ids = np.zeros((batch, length), np.int32)
    labels = np.full((batch, length), -100, np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i, (x, y) in enumerate(zip(rows.ids, rows.labels)):
        n = min(len(x), length)
        ids[i, :n], labels[i, :n], mask[i, :n] = x[:n], y[:n], 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("name", ["phi", "gpt2", "gpt_neox", "gemma2"])
def test_unlearning_step_and_evaluation_run_unchanged(name, tiny_checkpoints):
    """NPO+GD (reference included) through make_train_step, then the evaluation kernels."""
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints(name))
    objective = build_objective("NPO+GD")
    mesh = make_mesh(data=1)
    graphdef, params = nnx.split(model)
    params = place_params(params, mesh)
    ref = jax.tree.map(lambda x: x.copy(), params)
    tx = make_optimizer(lambda _: 1e-3)
    state = init_state(params, tx, 0)
    before = flat_params(model)
    step = jit_train_step(make_train_step(graphdef, objective, tx, lambda _: 1e-3), state, ref, mesh)
    batch = place_batch(StepBatch.from_arrays({"forget": _stream(0), "retain": _stream(1)}), mesh)
    state, metrics = step(state, ref, batch)
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    # at the start the policy is the reference: NPO's loss is (2/beta) log 2
    assert float(metrics["loss/NPO"]) == pytest.approx(2 / 0.1 * np.log(2), rel=1e-5)
    trained = nnx.merge(graphdef, state.params)
    after = flat_params(trained)
    assert any(not np.array_equal(before[k], after[k]) for k in before)

    rows = _rows(3, n=3)
    scores = score_rows(trained, rows, pad_id=0, batch_size=4, buckets=(32,))
    assert np.isfinite(scores.avg_nll).all() and len(scores.token_logp) == 3
    # prefix trees: depth positions (learned ones included) and ancestor masks score as whole rows
    trees = score_prefix_trees(trained, rows, pad_id=0, full=np.ones(3, bool), batch_size=4)
    for a, b in zip(trees.token_logp, scores.token_logp):
        np.testing.assert_allclose(a, b, atol=1e-5)

    class Tok:  # generate_texts only decodes
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    texts = generate_texts(
        trained, Tok(), [r[:5] for r in rows.ids], pad_id=0, eos_ids=[2], batch_size=4, budgets=[4, 4, 4], buckets=(8,)
    )
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
