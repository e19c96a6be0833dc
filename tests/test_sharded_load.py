"""Loading onto an 8-device CPU mesh places shards directly and gives one-device logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxunlearn
from conftest import padded_batch, run_python

pytestmark = pytest.mark.subprocess

CHILD = r"""
import json, sys
import numpy as np, jax
import jaxunlearn
from jaxunlearn.parallel import make_mesh
from flax import nnx
assert jax.device_count() == 8, jax.device_count()
mesh = make_mesh(data=2, fsdp=2, tensor=2)
model, _ = jaxunlearn.load_pretrained(sys.argv[1], mesh=mesh)
specs = {"/".join(map(str, p)): [str(a) for a in v.get_value().sharding.spec]
         for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
shard_shapes = {"/".join(map(str, p)): list(v.get_value().addressable_shards[0].data.shape)
                for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
ids, mask = np.load(sys.argv[2]), np.load(sys.argv[3])
with jax.sharding.use_mesh(mesh) if hasattr(jax.sharding, "use_mesh") else jax.set_mesh(mesh):
    logits = jax.jit(lambda m, i, a: m(i, a))(model, ids, mask)
np.save(sys.argv[4], np.asarray(logits))
print(json.dumps({"specs": specs, "shard_shapes": shard_shapes}))
"""


def test_sharded_load_matches_single_device(tiny_checkpoints, tmp_path):
    path = tiny_checkpoints("llama_gqa")
    ids, mask = padded_batch(batch=4)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    files = [str(tmp_path / f) for f in ("ids.npy", "mask.npy", "out.npy")]
    proc = run_python(CHILD, str(path), *files, env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    # embed [vocab=101, embed=64]: 101 is not divisible by tensor=2, so only fsdp shards it.
    assert info["specs"]["embed"] == ["None", "fsdp"]
    assert info["shard_shapes"]["embed"] == [101, 32]
    assert info["specs"]["layers/q_proj"] == ["None", "fsdp", "tensor"]
    assert info["shard_shapes"]["layers/q_proj"] == [2, 32, 32]
    single, _ = jaxunlearn.load_pretrained(path)
    expected = np.asarray(single(ids, mask))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5, rtol=1e-5)


OPT_CHILD = r"""
import jax, optax
from flax import nnx
import jaxunlearn
from jaxunlearn.models.config import ModelConfig
from jaxunlearn.parallel import make_mesh
from jaxunlearn.training.step import place_params, sharded_init_state
cfg = ModelConfig(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8)
mesh = make_mesh(data=1, fsdp=4)
params = place_params(nnx.split(jaxunlearn.create_model(cfg))[1], mesh)
state = sharded_init_state(params, optax.adamw(1e-3), 0, mesh)
adam = state.opt_state[0]
pairs = [(p.sharding, m.sharding, v.sharding) for p, m, v in
         zip(jax.tree.leaves(params), jax.tree.leaves(adam.mu), jax.tree.leaves(adam.nu))]
assert all(p == m == v for p, m, v in pairs), pairs
assert any(not p.is_fully_replicated for p, _, _ in pairs)
print("OK", len(pairs))
"""


def test_optimizer_moments_are_sharded_like_parameters():
    """FSDP must split AdamW's moments too (XLA alone would replicate the zero-initialized ones)."""
    proc = run_python(OPT_CHILD, env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


EVAL_CHILD = """
import sys
import numpy as np
import jaxunlearn
from jaxunlearn.evaluation.prefix_trees import score_prefix_trees
from jaxunlearn.models.config import ModelConfig
from jaxunlearn.parallel import make_mesh
sys.path.insert(0, "tests")
from test_evaluation import _candidate_rows
cfg = ModelConfig(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8)
model = jaxunlearn.create_model(cfg, seed=0)
rows = _candidate_rows(vocab=64)
full = np.arange(len(rows)) % 3 == 0
one = score_prefix_trees(model, rows, 0, full, batch_size=4, width=48)
four = score_prefix_trees(model, rows, 0, full, batch_size=4, mesh=make_mesh(data=4), width=48)
for k in ("token_logp", "mu", "sigma"):
    for a, b in zip(getattr(one, k), getattr(four, k)):
        np.testing.assert_allclose(a, b, atol=1e-5)

# the model on a data 2 x fsdp 2 mesh (parameters split): scoring and decoding find the mesh
# from the parameters and split the batch over data and fsdp
from flax import nnx
from jaxunlearn.evaluation.kernels import batch_mesh, generate_texts, score_rows
from jaxunlearn.training.step import place_params
one_device = nnx.clone(model)
mesh = make_mesh(data=2, fsdp=2)
nnx.update(model, place_params(nnx.state(model), mesh))
assert batch_mesh(model) is mesh
sharded = score_prefix_trees(model, rows, 0, full, batch_size=4, width=48)
for k in ("token_logp", "mu", "sigma"):
    for a, b in zip(getattr(one, k), getattr(sharded, k)):
        np.testing.assert_allclose(a, b, atol=1e-5)
by_rows = [score_rows(m, rows, 0, batch_size=4, buckets=(64,)) for m in (one_device, model)]
for a, b in zip(by_rows[0].token_logp, by_rows[1].token_logp):
    np.testing.assert_allclose(a, b, atol=1e-5)

class Tok:  # ids as text
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))

prompts = [np.arange(1, 4 + i % 5, dtype=np.int32) for i in range(6)]  # 6 rows: 4 + a last batch of 2
texts = [generate_texts(m, Tok(), prompts, 0, [63], batch_size=4, budgets=[7] * 6) for m in (one_device, model)]
assert texts[0] == texts[1] and all(len(t.split()) for t in texts[0]), texts

# a model on one device: replicated over a data axis once, the caller's model left alone
from jaxunlearn.evaluation.evaluate import place_for_evaluation
placed, data4 = place_for_evaluation(one_device, 4)
assert data4.shape["data"] == 4 and batch_mesh(placed) is data4 and batch_mesh(one_device) is None
assert place_for_evaluation(one_device, 6) == (one_device, None)  # 6 rows do not split over 4 devices
assert generate_texts(placed, Tok(), prompts, 0, [63], batch_size=4, budgets=[7] * 6) == texts[0]
print("OK", len(rows))
"""


def test_evaluation_on_a_mesh_equals_one_device():
    """Evaluation batches split over 4 devices (sequence counts rounded up) score as on one,
    and a model whose parameters are split (data 2 x fsdp 2) scores and decodes as on one."""
    proc = run_python(EVAL_CHILD, env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
