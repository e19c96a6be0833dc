"""KV-cache greedy decoding equals step-by-step full-forward decoding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn
from flax import nnx

from jaxunlearn.evaluation.generation import decoding_layers, greedy_generate

NEW = 6


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _logits(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask)


def full_forward_greedy(model, ids, mask, steps):
    """Greedy decoding by a full forward of the whole sequence per new token, no KV cache.
    The sequence sits right-padded in a buffer of its final width (masked slots after the
    last token change nothing under the causal mask), so one shape compiles once."""
    b, t = ids.shape
    buf = np.zeros((b, t + steps), np.int32)
    buf_mask = np.zeros((b, t + steps), np.int32)
    buf[:, :t], buf_mask[:, :t] = ids, mask
    graphdef, state = nnx.split(model)
    for i in range(steps):
        logits = np.asarray(_logits(graphdef, state, buf, buf_mask))
        buf[:, t + i] = np.argmax(logits[:, t + i - 1], axis=-1)
        buf_mask[:, t + i] = 1
    return buf[:, t:]


def assert_kv_cache_matches_full_forward(model):
    rng = np.random.RandomState(1)
    ids = rng.randint(3, 101, (3, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # left padding
    mask[2, :4] = 0
    ids[mask == 0] = 0
    expected = full_forward_greedy(model, ids, mask, NEW)
    # the layers of each decoding step as a scan, and unrolled with either projection layout
    for loop, layout in (("scan", "auto"), ("unrolled", "rows"), ("unrolled", "columns")):
        layers = decoding_layers(model, loop, layout)
        got = greedy_generate(model, ids, mask, NEW, eos_token_ids=[-1], pad_token_id=0, layer_params=layers)
        np.testing.assert_array_equal(got, expected, err_msg=f"{loop} {layout}")


def test_kv_cache_decoding_matches_full_forward(tiny_checkpoints):
    assert_kv_cache_matches_full_forward(jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))[0])


@pytest.mark.parametrize("loop", ["scan", "unrolled"])
def test_a_batch_that_shrinks_as_rows_finish_decodes_the_same(tiny_checkpoints, monkeypatch, loop):
    """Rows with small budgets finish first; the batch continues with its live rows
    (8 -> 4 -> 2 -> 1 with SHRINK_MIN_ROWS = 1), and every row's tokens equal full-forward
    greedy decoding's, cut at its budget, and those of the batch that never shrinks."""
    from jaxunlearn.evaluation import generation

    model = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))[0]
    rng = np.random.RandomState(2)
    ids = rng.randint(3, 101, (8, 5)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[3, :2] = 0  # left padding
    ids[mask == 0] = 0
    budgets = np.array([1, 2, 1, 8, 3, 1, 5, 2])
    expected = full_forward_greedy(model, ids, mask, 8)
    layers = decoding_layers(model, loop)
    fixed = greedy_generate(model, ids, mask, 8, [-1], 0, layer_params=layers, budgets=budgets, shrink=False)
    monkeypatch.setattr(generation, "SHRINK_MIN_ROWS", 1)
    sizes = []
    resume = generation._resume

    def spy(graphdef, state, layer_params, carry, rows, *args, **kwargs):
        sizes.append(len(rows))
        return resume(graphdef, state, layer_params, carry, rows, *args, **kwargs)

    monkeypatch.setattr(generation, "_resume", spy)
    short = greedy_generate(model, ids, mask, 8, [-1], 0, layer_params=layers, budgets=budgets, shrink=True)
    assert sizes == [] and (short == fixed).all()  # 8 steps at most: too few to pay for a compile
    monkeypatch.setattr(generation, "SHRINK_MIN_STEPS", 0)
    got = greedy_generate(model, ids, mask, 8, [-1], 0, layer_params=layers, budgets=budgets, shrink=True)
    assert sizes == [4, 2, 1]
    np.testing.assert_array_equal(got, fixed)
    for row, budget in enumerate(budgets):
        np.testing.assert_array_equal(got[row, :budget], expected[row, :budget])
        assert (got[row, budget:] == 0).all()  # pad after the budget


def test_unrolled_decoding_holds_weights_in_the_compute_dtype():
    """fp32 parameters computing in bf16: the per-layer copies are cast once, not every token."""
    from conftest import tiny_llama_config

    model = jaxunlearn.create_model(tiny_llama_config(compute_dtype="bfloat16"), seed=0)
    layers = decoding_layers(model, "unrolled")
    assert len(layers) == 2 and all(x.dtype == jnp.bfloat16 for p in layers for x in p.values())
    ids, mask = np.full((2, 5), 7, np.int32), np.ones((2, 5), np.int32)
    np.testing.assert_array_equal(
        greedy_generate(model, ids, mask, 4, [-1], 0, layer_params=layers),
        greedy_generate(model, ids, mask, 4, [-1], 0, layer_params="scan"),
    )


def test_columns_layout_holds_projections_transposed_and_multiplies_the_same(monkeypatch):
    """projections="columns": each projection held [out, in] under `<name>_t`, the rest as
    is; the layer computes what x @ W computes (to fp32 rounding); auto follows the CPU."""
    from conftest import tiny_llama_config
    from jaxunlearn.evaluation import projection_layout as P
    from jaxunlearn.models import layers as L

    model = jaxunlearn.create_model(tiny_llama_config(), seed=0)
    rows, columns = decoding_layers(model, "unrolled", "rows"), decoding_layers(model, "unrolled", "columns")
    assert set(columns[0]) == {f"{k}_t" if k.endswith("_proj") else k for k in rows[0]}
    np.testing.assert_array_equal(columns[1]["gate_proj_t"], rows[1]["gate_proj"].T)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 3, rows[0]["q_proj"].shape[0]), jnp.float32)
    np.testing.assert_allclose(
        L.linear_transposed(x, columns[0]["q_proj_t"]), L.linear(x, rows[0]["q_proj"]), rtol=1e-5, atol=1e-6
    )
    for vendor, layout in (("GenuineIntel", "columns"), ("AuthenticAMD", "rows"), ("", "rows")):
        monkeypatch.setattr(P, "cpu_vendor", lambda v=vendor: v)
        assert P.projection_layout("auto") == layout, vendor
    assert [P.projection_layout(n) for n in ("rows", "columns")] == ["rows", "columns"]
    with pytest.raises(ValueError, match="unknown projection layout 'cols'.*'columns'"):
        decoding_layers(model, "unrolled", "cols")


def test_unknown_layer_loop_is_refused(tiny_checkpoints):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    with pytest.raises(ValueError, match="unknown layer_loop 'fast'"):
        greedy_generate(model, np.ones((1, 3), np.int32), np.ones((1, 3), np.int32), 2, [2], 0, layer_params="fast")


def test_generation_stops_at_eos(tiny_checkpoints):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    ids = np.random.RandomState(2).randint(3, 101, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    free = full_forward_greedy(model, ids, mask, NEW)
    eos = int(free[0, 1])  # pretend row 0's second token is EOS
    got = greedy_generate(model, ids, mask, NEW, eos_token_ids=[eos], pad_token_id=0)
    np.testing.assert_array_equal(got[0, :2], free[0, :2])
    assert (got[0, 2:] == 0).all()


def test_decoding_programs_compiled_ahead_are_the_ones_the_calls_run(tiny_checkpoints):
    """compile_decoding compiles each batch shape's program side by side; the calls that
    follow compile nothing more and decode what greedy_generate decodes."""
    from jaxunlearn.evaluation.generation import compile_decoding, decoding_call, run_decoding

    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    rng = np.random.RandomState(3)
    batches = [rng.randint(3, 101, (rows, width)).astype(np.int32) for rows, width in ((4, 9), (2, 5), (4, 9))]
    calls = [
        decoding_call(model, ids, np.ones_like(ids), NEW + i, [-1], 0, "unrolled") for i, ids in enumerate(batches)
    ]
    compiled = []

    def count(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:  # under a thread-local jax context, as evaluate_model's matmul precision
        with jax.default_matmul_precision("highest"):
            compile_decoding(calls)
            assert len(compiled) == 3  # three shapes (the new-token buffer is one too)
            got = [run_decoding(call) for call in calls]
        assert len(compiled) == 3
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    for i, ids in enumerate(batches):
        expected = greedy_generate(model, ids, np.ones_like(ids), NEW + i, [-1], 0, layer_params="unrolled")
        np.testing.assert_array_equal(got[i], expected)
