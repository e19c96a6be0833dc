"""LoRA mode (issue 22): adapters start at the base model, only they train (and hold
optimizer state), the reference is the base with adapters off, the merged export and the
PEFT files give the adapted model's logits, sharded LoRA equals one device."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxunlearn
from conftest import TINY_TRAIN
from jaxunlearn.config import load_config
from jaxunlearn.errors import ConfigError
from jaxunlearn.models.lora import adapters_off, add_lora, merge_lora, split_adapters

IDS = jnp.array([[1, 5, 9, 13, 17, 21, 25, 29], [1, 7, 11, 15, 19, 23, 27, 31]])


def _adapted(tiny_lm, targets=("q", "v", "o", "gate", "down"), nudge=0.05):
    model, tokenizer = jaxunlearn.load_pretrained(tiny_lm)
    base_logits = np.asarray(model(IDS))
    add_lora(model, 4, 8.0, targets)
    graphdef, adapters, base = split_adapters(model)
    moved = jax.tree.map(lambda x: x + nudge * jax.random.normal(jax.random.key(x.size), x.shape), adapters)
    return nnx.merge(graphdef, moved, base), tokenizer, base_logits


def test_zero_initialized_b_is_the_base_model_and_off_is_the_base(tiny_lm):
    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    before = np.asarray(model(IDS))
    add_lora(model, 8, 16.0, ["q", "k", "v", "o", "gate", "up", "down"])
    assert np.array_equal(np.asarray(model(IDS)), before)
    adapted, _, base_logits = _adapted(tiny_lm)
    assert np.abs(np.asarray(adapted(IDS)) - base_logits).max() > 1e-3  # the adapters do something
    graphdef, adapters, base = split_adapters(adapted)
    assert np.array_equal(np.asarray(nnx.merge(graphdef, adapters_off(adapters), base)(IDS)), base_logits)


def test_targets_and_rank_are_checked(tiny_lm):
    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    with pytest.raises(ConfigError, match="'attn' is not a projection"):
        add_lora(model, 4, 8.0, ["attn"])
    with pytest.raises(ConfigError, match="lora.rank=0"):
        add_lora(model, 0, 8.0, ["q"])
    assert add_lora(model, 2, 4.0, ["q", "q_proj"]).config.lora.targets == ("q_proj",)
    assert load_config(None, ["lora.rank=4"]).lora.enabled and not load_config(None, []).lora.enabled
    assert add_lora(jaxunlearn.load_pretrained(tiny_lm)[0], 4, 8.0, ["q"], rslora=True).config.lora.scale == 4.0


def test_merged_export_equals_the_adapted_model(tiny_lm, tmp_path):
    adapted, tokenizer, _ = _adapted(tiny_lm)
    expected = np.asarray(adapted(IDS))
    assert (
        np.abs(np.asarray(merge_lora(adapted)(IDS)) - expected).max() < 5e-4
    )  # fp32 reassociation on logits of size ~10
    out = jaxunlearn.save_pretrained(adapted, tokenizer, tmp_path / "merged")
    reloaded, _ = jaxunlearn.load_pretrained(out)
    assert (
        reloaded.config.lora is None and np.abs(np.asarray(reloaded(IDS)) - expected).max() < 5e-4
    )  # fp32 reassociation on logits of size ~10
    assert adapted.config.lora is not None  # merging for export leaves the adapted model as it was


def test_peft_files_load_in_peft_and_back(tiny_lm, tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from jaxunlearn.checkpoints.peft import load_peft_adapters, save_peft_adapters

    adapted, _, _ = _adapted(tiny_lm)
    expected = np.asarray(adapted(IDS))
    out = save_peft_adapters(adapted, tmp_path / "adapter", str(tiny_lm))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["lora_dropout"] == 0.0
    assert config["target_modules"] == ["down_proj", "gate_proj", "o_proj", "q_proj", "v_proj"]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_lm), torch_dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        theirs = peft_model(torch.tensor(np.asarray(IDS))).logits.numpy()
    assert np.abs(theirs - expected).max() < 5e-4
    mine, _ = jaxunlearn.load_pretrained(tiny_lm)
    load_peft_adapters(mine, out)
    assert np.abs(np.asarray(mine(IDS)) - expected).max() < 5e-4  # fp32 reassociation on logits of size ~10


def _lora_run(tiny_lm, out, *extra):
    from jaxunlearn.pipelines.unlearn import unlearn

    overrides = [f"model.path={tiny_lm}", f"output.dir={out}", *TINY_TRAIN, "train.max_steps=2", "lora.rank=4"]
    return unlearn(load_config(None, [*overrides, "train.lr=1e-3", "train.warmup_steps=0", *extra]), progress=False)


@pytest.mark.parametrize(
    "objective,extra",
    [("NPO+GD", []), ("RMU+RMU_RETAIN", ["objective.options.rmu_layer=0"])],
    ids=["NPO+GD", "RMU"],
)
def test_a_lora_run_trains_only_the_adapters(tiny_lm, tmp_path, objective, extra):
    original, _ = jaxunlearn.load_pretrained(tiny_lm)
    summary = _lora_run(tiny_lm, tmp_path / "run", f"objective.name={objective}", *extra)
    trained = summary["model"]
    _, adapters, base = split_adapters(trained)
    _, original_state = nnx.split(original)
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), base, original_state)
    assert all(jax.tree.leaves(same))  # not one base weight moved
    moved = {
        jax.tree_util.keystr(p): float(jnp.abs(x).max())
        for p, x in jax.tree_util.tree_flatten_with_path(adapters)[0]
        if "lora_b" in jax.tree_util.keystr(p)
    }
    assert any(v > 0 for v in moved.values())
    if objective.startswith("RMU"):  # the layer selection holds in LoRA mode: only layer 0's MLP adapters move
        b = trained.layers.down_proj_lora_b[...]
        assert float(jnp.abs(b[0]).max()) > 0 and float(jnp.abs(b[1]).max()) == 0
        assert float(jnp.abs(trained.layers.q_proj_lora_b[...]).max()) == 0
    checkpoint_bytes = sum(f.stat().st_size for f in (tmp_path / "run" / "checkpoints").rglob("*") if f.is_file())
    model_bytes = sum(x.size * 4 for x in jax.tree.leaves(original_state))
    assert checkpoint_bytes < model_bytes / 10  # adapters and their AdamW moments only
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    exported, _ = jaxunlearn.load_pretrained(tmp_path / "run" / "model")
    assert np.abs(np.asarray(exported(IDS)) - np.asarray(trained(IDS))).max() < 5e-4


def test_lora_resumes_exactly_and_starts_from_peft_files(tiny_lm, tmp_path, monkeypatch):
    import os
    import signal

    from jaxunlearn.errors import Interrupted
    from jaxunlearn.pipelines import unlearn as api

    args = ("objective.name=GA+GD", "train.max_steps=3", "lora.dropout=0.1")  # the masks come from the state's key
    straight = _lora_run(tiny_lm, tmp_path / "straight", *args)

    def stop_after_two(step, _model):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop checkpoints step 2 and stops

    monkeypatch.setattr(api, "_periodic_eval", lambda *a: stop_after_two)
    with pytest.raises(Interrupted):
        _lora_run(tiny_lm, tmp_path / "cut", *args)
    monkeypatch.setattr(api, "_periodic_eval", lambda *a: None)
    overrides = [f"model.path={tiny_lm}", f"output.dir={tmp_path / 'cut'}", *TINY_TRAIN, "lora.rank=4"]
    overrides += ["train.lr=1e-3", "train.warmup_steps=0", *args]
    resumed = api.unlearn(load_config(None, overrides), resume=True, progress=False)
    assert np.array_equal(np.asarray(resumed["model"](IDS)), np.asarray(straight["model"](IDS)))
    follow = _lora_run(
        tiny_lm, tmp_path / "follow", "objective.name=GA+GD", f"lora.init_from={tmp_path / 'straight' / 'adapter'}"
    )
    assert follow["model"].config.lora.rank == 4


def test_lora_dropout_only_in_training_forwards(tiny_lm, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    add_lora(model, 4, 8.0, ["q", "down"], dropout=0.5)
    graphdef, adapters, base = split_adapters(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x + 0.05, adapters), base)
    plain = np.asarray(model(IDS))
    assert np.array_equal(np.asarray(model.forward(IDS, dropout_key=None).logits), plain)  # evaluation: none
    one = np.asarray(model.forward(IDS, dropout_key=jax.random.PRNGKey(0)).logits)
    again = np.asarray(model.forward(IDS, dropout_key=jax.random.PRNGKey(0)).logits)
    other = np.asarray(model.forward(IDS, dropout_key=jax.random.PRNGKey(1)).logits)
    assert np.array_equal(one, again) and not np.allclose(one, plain) and not np.allclose(one, other)
    with pytest.raises(ConfigError, match="lora.dropout=1.0"):
        add_lora(jaxunlearn.load_pretrained(tiny_lm)[0], 4, 8.0, ["q"], dropout=1.0)
    # training draws the masks from the state's key: test_lora_resumes_exactly_... runs with dropout
