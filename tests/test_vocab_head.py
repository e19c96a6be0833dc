"""The blockwise LM head: every term's value and gradient by vocabulary blocks equal the
whole-logits path, and the compiled train step holds no [B, T, V] array."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxunlearn.models import vocab_head
from jaxunlearn.models.vocab_head import (
    HeadSpec,
    VocabHead,
    block_size,
    log_partition,
    softmax_stats,
    teacher_expectation,
)
from jaxunlearn.objectives import StepBatch, StreamOutputs, build_objective
from jaxunlearn.objectives.registry import TERMS
from jaxunlearn.training.step import init_state, make_train_step

B, T, D, V = 2, 6, 8, 37
STREAMS = ("forget", "retain", "forget_idk", "retain_idk", "forget_expected")


def _head(rng, vocab_axis=1, softcap=0.0, bias=False, chunk=8):
    shape = (D, V) if vocab_axis == 1 else (V, D)
    return VocabHead(
        jnp.asarray(rng.randn(B, T, D), jnp.float32),
        jnp.asarray(rng.randn(*shape) * 0.7, jnp.float32),
        jnp.asarray(rng.randn(V), jnp.float32) if bias else None,
        HeadSpec(V, vocab_axis, softcap, chunk),
    )


def test_block_size_divides_the_vocabulary_when_it_can():
    assert block_size(49152, 16384) == 16384
    assert block_size(128256, 16384) == 16032
    assert block_size(32000, 16384) == 16000
    assert block_size(1000, 16384) == 1000
    assert block_size(37, 8) == 8  # prime: padded blocks


@pytest.mark.parametrize("layout", [dict(), dict(vocab_axis=0), dict(softcap=3.0, bias=True), dict(chunk=V)], ids=str)
def test_statistics_and_gradients_equal_whole_logits(layout):
    rng = np.random.RandomState(0)
    head, teacher = _head(rng, **layout), _head(rng, **layout)
    targets = jnp.asarray(rng.randint(0, V, (B, T)), jnp.int32)
    g = jnp.asarray(rng.randn(4, B, T), jnp.float32)

    def blockwise(h, w):
        x = head.replace(hidden=h, weight=w)
        lse, mean, expected = softmax_stats(x)
        cross, student_lse, teacher_negent = teacher_expectation(teacher, x, targets, beta=2.0)
        return (
            (g[0] * lse + g[1] * mean + g[2] * expected + g[3] * cross).sum()
            + x.target_logits(targets).sum()
            + (student_lse * g[1]).sum()
            + jax.lax.stop_gradient(teacher_negent).sum()
        )

    def whole(h, w):
        z = head.replace(hidden=h, weight=w).logits()
        zt = teacher.logits() - 2.0 * jax.nn.one_hot(targets, V)
        p, q = jax.nn.softmax(z), jax.nn.softmax(zt)
        lse, mean, expected = jax.nn.logsumexp(z, -1), z.mean(-1), (p * z).sum(-1)
        cross = (q * z).sum(-1)
        tok = jnp.take_along_axis(z, targets[..., None], -1)[..., 0]
        teacher_negent = (q * jax.nn.log_softmax(zt)).sum(-1)
        return (
            (g[0] * lse + g[1] * mean + g[2] * expected + g[3] * cross).sum()
            + tok.sum()
            + (lse * g[1]).sum()
            + teacher_negent.sum()
        )

    v1, g1 = jax.value_and_grad(blockwise, argnums=(0, 1))(head.hidden, head.weight)
    v2, g2 = jax.value_and_grad(whole, argnums=(0, 1))(head.hidden, head.weight)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", [dict(), dict(vocab_axis=0, softcap=3.0, bias=True)], ids=str)
def test_log_partition_at_the_needed_rows_equals_every_row(layout, monkeypatch):
    """Rows moved to the front, chunks past the last needed row skipped: the needed
    tokens' values and the gradients (hidden, head, bias) equal the all-rows path."""
    monkeypatch.setattr(vocab_head, "MIN_ROW_CHUNK", 4)  # 12 rows: 3 chunks, some skipped
    monkeypatch.setattr(vocab_head, "ROW_CHUNKS", 3)
    rng = np.random.RandomState(2)
    head = _head(rng, **layout)
    g = jnp.asarray(rng.randn(B, T), jnp.float32)
    masks = {
        "scattered": np.array([[0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0]], bool),  # 4 rows: chunk 0 only
        "most": np.array([[1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], bool),  # 10 rows: all 3 chunks
        "none": np.zeros((B, T), bool),
    }
    for name, mask in masks.items():

        def loss(h, w, b, where):
            x = head.replace(hidden=h, weight=w, bias=b)
            return (jnp.where(mask, log_partition(x, where=where), 0.0) * g).sum()

        args = (head.hidden, head.weight, head.bias)
        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2) if head.bias is not None else (0, 1)))
        v1, g1 = grad(*args, jnp.asarray(mask))
        v2, g2 = grad(*args, None)
        np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6, err_msg=name)
        for a, b in zip(g1, g2):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
        lse = log_partition(head, where=jnp.asarray(mask))
        assert np.all(np.asarray(lse)[~mask] == 0), name


def _outputs(rng):
    heads = {s: _head(rng, bias=True) for s in STREAMS}
    hidden = {s: jnp.asarray(rng.randn(3, B, T, D), jnp.float32) for s in STREAMS}
    return heads, hidden


def _batch(rng):
    streams = {}
    for k, s in enumerate(STREAMS):
        ids = rng.randint(0, V, (B, T)).astype(np.int32)
        mask = np.ones((B, T), np.int32)
        mask[0, -2:] = 0
        labels = ids.copy()
        labels[:, : 2 + k % 2] = -100
        labels[mask == 0] = -100
        streams[s] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return StepBatch.from_arrays(streams)


TOKEN_TERMS = sorted(n for n, t in TERMS.items() if not t.needs_hidden)


@pytest.mark.parametrize("name", TOKEN_TERMS)
def test_every_token_term_by_blocks_equals_whole_logits(name):
    """Value and gradient (hidden states and head) of each term that reads logits."""
    rng = np.random.RandomState(1)
    batch, (pol_heads, _), (ref_heads, _) = _batch(rng), _outputs(rng), _outputs(rng)
    objective = build_objective(name)
    weights = objective.row_weights(batch, None)

    def loss(hiddens, weights_, blockwise: bool):
        pol = {}
        for s, h in pol_heads.items():
            head = h.replace(hidden=hiddens[s], weight=weights_[s])
            pol[s] = StreamOutputs(head if blockwise else head.logits())
        ref = {s: StreamOutputs(h if blockwise else h.logits()) for s, h in ref_heads.items()}
        return objective.loss(pol, ref, batch, weights)[0]

    args = ({s: h.hidden for s, h in pol_heads.items()}, {s: h.weight for s, h in pol_heads.items()})
    v1, g1 = jax.value_and_grad(loss, argnums=(0, 1))(*args, True)
    v2, g2 = jax.value_and_grad(loss, argnums=(0, 1))(*args, False)
    np.testing.assert_allclose(v1, v2, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def _tiny_step(vocab_block: int, objective_name: str):
    from conftest import tiny_llama_config
    from jaxunlearn.models.registry import create_model

    model = create_model(tiny_llama_config(vocab_size=97, tie_word_embeddings=True), seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.sgd(1.0)  # the update is the gradient (Adam would magnify its rounding)
    step = make_train_step(graphdef, build_objective(objective_name), tx, lambda _: 1.0, vocab_block=vocab_block)
    return jax.jit(step), init_state(params, tx, 0), params


def _model_batch(vocab=97, rows=4, length=12):
    rng = np.random.RandomState(3)
    streams = {}
    for s in ("forget", "retain"):
        ids = rng.randint(0, vocab, (rows, length)).astype(np.int32)
        labels = ids.copy()
        labels[:, :4] = -100
        streams[s] = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels}
    return StepBatch.from_arrays(streams)


def test_train_step_by_blocks_equals_whole_logits_and_holds_no_vocab_wide_array():
    batch = _model_batch()
    results = {}
    for block in (0, 16):
        step, state, params = _tiny_step(block, "ME+KL")
        new, metrics = step(state, params, batch)
        results[block] = (metrics["loss"], jax.tree.map(jnp.subtract, new.params, params))
        # rows x length x vocab, or flattened (rows*length) x vocab, in any dtype
        wide = re.findall(r"tensor<(?:4x12x97|48x97)x\w+>", step.lower(state, params, batch).as_text())
        if block:
            assert not wide, f"vocab-wide arrays in the blockwise step: {sorted(set(wide))}"
        else:
            assert wide  # the check sees them where they are
    np.testing.assert_allclose(results[16][0], results[0][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[16][1]), jax.tree.leaves(results[0][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
