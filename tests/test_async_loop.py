"""The loop without a host sync per step: a gated step after a non-finite one changes
nothing (so metrics may be read one step late), and prefetched batches are the iterator's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from conftest import tiny_llama_config
from jaxunlearn.data.batching import BatchIterator
from jaxunlearn.data.tokenize import TokenizedRows
from jaxunlearn.models.registry import create_model
from jaxunlearn.objectives import StepBatch, build_objective
from jaxunlearn.training.prefetch import Prefetcher
from jaxunlearn.training.step import init_state, make_train_step


def _batch(vocab=64, rows=2, length=10):
    rng = np.random.RandomState(0)
    ids = rng.randint(0, vocab, (rows, length)).astype(np.int32)
    labels = ids.copy()
    labels[:, :3] = -100
    return StepBatch.from_arrays({"forget": {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels}})


def test_a_halted_step_changes_nothing_and_passes_the_halt_on():
    graphdef, params = nnx.split(create_model(tiny_llama_config(), seed=0))
    tx = optax.adamw(1e-3)
    step = jax.jit(make_train_step(graphdef, build_objective("GA"), tx, lambda _: 1e-3))
    state = init_state(params, tx, 0)
    moved, metrics = step(state, None, _batch(), jnp.asarray(False))
    assert bool(metrics["finite"]) and not bool(metrics["halted"]) and int(moved.step) == 1
    kept, metrics = step(state, None, _batch(), jnp.asarray(True))
    assert not bool(metrics["finite"]) and bool(metrics["halted"])
    assert int(kept.step) == 0
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def _rows(n, seed):
    rng = np.random.RandomState(seed)
    ids = [rng.randint(1, 50, rng.randint(4, 12)).astype(np.int32) for _ in range(n)]
    return TokenizedRows(ids, [np.concatenate([[-100, -100], x[2:]]).astype(np.int32) for x in ids])


def test_prefetched_batches_are_the_iterators_in_order_and_after_a_jump():
    streams = {"forget": _rows(10, 0), "retain": _rows(10, 1)}
    reference = BatchIterator(streams, 4, 7, 0)
    expected = [next(reference) for _ in range(6)]
    prefetch = Prefetcher(BatchIterator(streams, 4, 7, 0), total=6)
    try:
        for step in (0, 1, 2, 4, 5):  # 4 after 2: a batch not prepared ahead is made on demand
            _, got = prefetch.get(step)
            for name in streams:
                for key, value in expected[step][name].items():
                    np.testing.assert_array_equal(got[name][key], value)
    finally:
        prefetch.close()
