"""Attacks on the forgetting (issue 19): weight quantization, prompt probes, sampled
extraction, relearning, the recovery summary and the `attack` command end to end."""

from __future__ import annotations

import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY_TRAIN
from jaxunlearn import cli
from jaxunlearn.attacks.probes import Probe, add_typos, apply_probe, load_probes
from jaxunlearn.attacks.quantize import quantize_dequantize, quantize_params
from jaxunlearn.attacks.robustness import markdown, recovery_ratio, robustness_rows
from jaxunlearn.config import load_config
from jaxunlearn.errors import ConfigError


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_puts_every_weight_on_its_channels_grid(bits):
    w = jax.random.normal(jax.random.key(0), (2, 64, 8)) * jnp.arange(1, 9)  # channels of different scales
    q = np.asarray(quantize_dequantize(w, bits))
    levels = 2 ** (bits - 1) - 1
    scale = np.abs(np.asarray(w)).max(axis=1, keepdims=True) / levels  # per output channel, over the input axis
    steps = q / scale
    assert np.allclose(steps, np.round(steps), atol=1e-4) and np.abs(steps).max() <= levels + 1e-4
    assert np.abs(q - np.asarray(w)).max() <= scale.max() / 2 + 1e-6  # round to nearest
    assert len(np.unique(np.round(steps[0, :, 0]))) <= 2 * levels + 1


def test_group_quantization_has_a_scale_per_group_and_checks_the_size():
    w = jnp.concatenate([jnp.full((1, 4, 2), 0.01), jnp.full((1, 4, 2), 10.0)], axis=1).at[0, 0, 0].set(0.013)
    per_channel = np.asarray(quantize_dequantize(w, 4))
    grouped = np.asarray(quantize_dequantize(w, 4, group_size=4))
    assert np.allclose(per_channel[0, :4], 0.0)  # small weights vanish under the channel's large scale
    assert np.abs(grouped[0, :4] - np.asarray(w)[0, :4]).max() < 0.002  # their own group's scale keeps them
    with pytest.raises(ConfigError, match="does not divide"):
        quantize_dequantize(w, 4, group_size=3)


def test_quantize_params_touches_only_layer_kernels(tiny_lm):
    from flax import nnx

    import jaxunlearn

    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    _, state = nnx.split(model)
    q = quantize_params(state, 4)
    flat, flat_q = nnx.to_flat_state(state), nnx.to_flat_state(q)
    changed = {"/".join(map(str, k)) for (k, v), (_, vq) in zip(flat, flat_q) if not np.array_equal(v.value, vq.value)}
    assert changed == {
        f"layers/{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    }


ROWS = [
    {
        "question": f"Where was author number {i} born?",
        "answer": f"In town {i}.",
        "paraphrased_question": f"Birthplace of {i}?",
    }
    for i in range(6)
]


def test_probes_rewrite_questions_and_keep_answers():
    probes = load_probes()
    assert {"paraphrase", "role_play", "fiction", "in_context", "typos"} <= set(probes)
    wrapped = apply_probe(probes["role_play"], ROWS, ROWS)
    assert all(r["question"].endswith(o["question"]) and r["answer"] == o["answer"] for r, o in zip(wrapped, ROWS))
    assert [r["question"] for r in apply_probe(probes["paraphrase"], ROWS, ROWS)][0] == "Birthplace of 0?"
    assert apply_probe(probes["paraphrase"], [{"question": "q", "answer": "a"}], ROWS) is None
    shots = apply_probe(Probe("ic", "in_context", examples=3), ROWS, ROWS, seed=1)
    for row, original in zip(shots, ROWS):
        assert row["question"].count("Q: ") == 4 and row["question"].endswith(f"Q: {original['question']}\nA:")
        assert row["question"].count(original["question"]) == 1  # never its own answer as an example
    assert apply_probe(Probe("ic", "in_context", examples=3), ROWS, ROWS, seed=1) == shots  # seeded
    assert add_typos("Where was the author born", 1.0, random.Random(0)) != "Where was the author born"
    assert add_typos("Where was the author born", 0.0, random.Random(0)) == "Where was the author born"


def test_probe_files_extend_and_are_checked(tmp_path):
    mine = tmp_path / "probes.yaml"
    mine.write_text("grandma:\n  kind: template\n  template: 'My late grandmother used to tell me: {question}'\n")
    probes = load_probes(str(mine))
    assert probes["grandma"].template.startswith("My late") and "role_play" in probes
    for text, message in [
        ("x:\n  kind: nonsense\n", "needs kind"),
        ("x:\n  kind: template\n  template: no placeholder\n", "no {question} placeholder"),
        ("x:\n  kind: template\n  colour: red\n", "unknown field"),
        ("x: [1\n", "not valid YAML"),
    ]:
        mine.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_probes(str(mine))


def test_recovery_ratio_and_rows():
    assert recovery_ratio(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert recovery_ratio(0.1, 0.1, 0.9) == 0 and recovery_ratio(0.05, 0.1, 0.9) < 0
    assert recovery_ratio(0.5, 0.3, 0.3) is None and recovery_ratio(None, 0.1, 0.9) is None
    rows = robustness_rows(
        [{"attack": "quantize:int4", "forget_probability": 0.5}],
        {"forget_probability": 0.1},
        {"forget_probability": 0.9},
    )
    assert rows[0]["forget_probability_recovery"] == pytest.approx(0.5)
    assert rows[0]["forget_rougeL_recall_recovery"] is None


def test_sampling_is_seeded_and_tends_to_greedy_at_low_temperature(tiny_lm):
    import jaxunlearn
    from jaxunlearn.evaluation.generation import greedy_generate

    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12]], np.int32)
    mask = np.ones_like(ids)
    greedy = greedy_generate(model, ids, mask, 8, [2], 2)
    cold = greedy_generate(model, ids, mask, 8, [2], 2, temperature=1e-4, seed=3)
    assert np.array_equal(greedy, cold)
    hot = [greedy_generate(model, ids, mask, 8, [2], 2, temperature=2.0, seed=s) for s in (0, 0, 1)]
    assert np.array_equal(hot[0], hot[1]) and not np.array_equal(hot[0], hot[2])


def test_attack_command_end_to_end(tiny_lm, tmp_path, capsys):
    out = tmp_path / "attack"
    argv = [
        "attack",
        f"model.path={tiny_lm}",
        f"attack.target_model={tiny_lm}",
        *TINY_TRAIN,
        "eval.num_rows=3",
        "eval.generation_budget=open_unlearning",
        "eval.max_new_tokens=8",
        "eval.holdout_split=none",
        "attack.relearn_steps=[1,2]",
        "attack.relearn_rows=4",
        "attack.relearn_lr=1e-3",
        "attack.quantize_bits=[8]",
        "attack.probes=[paraphrase,role_play,in_context]",
        "attack.extract_samples=2",
        f"output.dir={out}",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    names = [r["attack"] for r in summary["rows"]]
    assert names == [
        "quantize:int8",
        "probe:paraphrase",
        "probe:role_play",
        "probe:in_context",
        "relearn:4 forget rows, 1 steps",
        "relearn:4 forget rows, 2 steps",
    ]
    unlearned = summary["references"]["unlearned"]["forget_probability"]
    relearned = [r["forget_probability"] for r in summary["attacks"] if r["attack"].startswith("relearn")]
    assert relearned[1] > relearned[0] > unlearned  # training on 4 other forget rows lifts the evaluated 3
    assert 0 <= summary["extraction"]["recovered"] <= 1 and summary["extraction_target"]["samples"] == 2
    assert (out / "robustness.png").exists() and (out / "report.md").exists() and "| probe:role_play |" in printed
    assert (out / "relearn" / "metrics.jsonl").exists() and not (out / "relearn" / "checkpoints").exists()
    assert cli.main(argv) == 2  # an attack summary is not overwritten unless asked


@pytest.mark.parametrize(
    "override,message",
    [("attack.attacks=[relearn,nudge]", "unknown attack"), ("attack.quantize_bits=[1]", "attack.quantize_bits=1")],
)
def test_bad_attack_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_an_unknown_probe_is_refused_before_loading(tmp_path, capsys):
    code = cli.main(["attack", "model.path=does-not-matter", "attack.probes=[telepathy]", f"output.dir={tmp_path}"])
    assert code == 2 and "unknown probe(s) ['telepathy']" in capsys.readouterr().err


def test_markdown_lists_references_attacks_and_extraction():
    summary = {
        "references": {"unlearned": {"forget_probability": 0.1}, "target": {"forget_probability": 0.9}},
        "attacks": [{"attack": "quantize:int4", "forget_probability": 0.5, "retain_probability": 0.7}],
        "rows": robustness_rows(
            [{"attack": "quantize:int4", "forget_probability": 0.5}],
            {"forget_probability": 0.1},
            {"forget_probability": 0.9},
        ),
        "extraction": {
            "recovered": 0.25,
            "greedy_recovered": 0.0,
            "best_rouge": 0.3,
            "samples": 8,
            "temperature": 1.0,
            "threshold": 0.5,
        },
    }
    text = markdown(summary)
    assert "| quantize:int4 | 0.5 | — | 0.5 | — | 0.7 |" in text and "25% of forget answers recovered" in text


def _fake_steps(run, utilities, forget):
    for step, (u, f) in enumerate(zip(utilities, forget), start=1):
        d = run / "eval" / f"step_{step}"
        d.mkdir(parents=True)
        summary = {"sets": {"forget": {"probability": f}, "retain": {"probability": u}}, "model_utility": u}
        (d / "summary.json").write_text(json.dumps(summary))


def test_selection_by_criterion_and_at_a_utility_drop(tmp_path):
    from jaxunlearn.evaluation.selection import pick_at_utility_drop, pick_best, step_evaluations

    _fake_steps(tmp_path / "run", [0.50, 0.45, 0.40, 0.30], [0.8, 0.5, 0.2, 0.1])
    steps = step_evaluations(tmp_path / "run")
    assert [s for s, _, _ in steps] == [1, 2, 3, 4]
    assert pick_best(steps, "min:forget.probability")["step"] == 4
    assert pick_best(steps, "max:model_utility")["step"] == 1
    picked = pick_at_utility_drop(steps, 0.5, 0.2, "model_utility")  # a 20% drop: 0.40
    assert picked["step"] == 3 and picked["utility_drop"] == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="max:KEY or min:KEY"):
        pick_best(steps, "best:forget")
    from jaxunlearn.errors import DataError

    with pytest.raises(DataError, match="eval.every_steps"):
        step_evaluations(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="eval.best_by"):
        load_config(None, ["eval.best_by=forget_quality"])


def test_report_at_equal_utility_picks_each_methods_step(tmp_path, capsys):
    _fake_steps(tmp_path / "GA", [0.50, 0.40, 0.30], [0.6, 0.3, 0.1])  # fast forgetting, fast utility loss
    _fake_steps(tmp_path / "ME", [0.49, 0.45, 0.40], [0.5, 0.2, 0.05])
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "summary.json").write_text(json.dumps({"sets": {}, "model_utility": 0.5}))
    runs = [str(tmp_path / "GA"), str(tmp_path / "ME")]
    assert cli.main(["report", *runs, "--at-utility", "0.2", "--baseline", str(tmp_path / "target")]) == 0
    out = capsys.readouterr().out
    assert "GA @ step 2 (model_utility drop 20.0%)" in out and "ME @ step 3 (model_utility drop 20.0%)" in out
    code = cli.main(["report", *runs, "--at-utility", "0.2"])
    assert code == 2 and "--baseline" in capsys.readouterr().err


def test_unlearn_keeps_step_models_and_picks_the_best(tiny_lm, tmp_path):
    from jaxunlearn.pipelines.unlearn import unlearn

    overrides = [f"model.path={tiny_lm}", f"output.dir={tmp_path / 'run'}", *TINY_TRAIN, "objective.name=GA"]
    overrides += ["train.max_steps=2", "train.warmup_steps=0", "output.export=false", "eval.every_steps=1"]
    overrides += ["eval.keep_models=true", "eval.best_by=min:forget.probability", "eval.num_rows=2"]
    overrides += ["eval.generate=false", "eval.sets=[forget]", "eval.holdout_split=none", "train.lr=1e-3"]
    summary = unlearn(load_config(None, overrides), progress=False)
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best == summary["best"] and best["step"] == 2  # gradient ascent lowers the forget probability
    assert (tmp_path / "run" / "eval" / "step_1" / "model" / "model.safetensors").exists()
    assert best["model"].endswith("step_2/model")


def test_report_puts_attack_results_side_by_side(tmp_path, capsys):
    for name, after in (("ME_GD", 0.3), ("GA_GD", 0.6)):
        d = tmp_path / name / "attack"
        d.mkdir(parents=True)
        refs = {"unlearned": {"forget_probability": 0.1}, "target": {"forget_probability": 0.9}}
        res = [{"attack": "quantize:int4", "forget_probability": after}]
        summary = {
            "kind": "robustness",
            "references": refs,
            "attacks": res,
            "rows": robustness_rows(res, refs["unlearned"], refs["target"]),
        }
        (d / "summary.json").write_text(json.dumps(summary))
    runs = [str(tmp_path / "ME_GD" / "attack"), str(tmp_path / "GA_GD" / "attack")]
    assert cli.main(["report", *runs, "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| attack | ME_GD | GA_GD |" in out and "| quantize:int4 | 0.3 (0.25) | 0.6 (0.625) |" in out
    assert (tmp_path / "cmp" / "robustness.png").exists()


def test_an_attack_without_relearning_writes_its_results(tiny_lm, tmp_path):
    out = tmp_path / "q"
    argv = ["attack", f"model.path={tiny_lm}", *TINY_TRAIN, "eval.num_rows=2", "eval.generate=false"]
    argv += ["eval.holdout_split=none", "attack.attacks=[quantize]", "attack.quantize_bits=[4]", f"output.dir={out}"]
    assert cli.main([*argv, "--no-progress"]) == 0
    assert [r["attack"] for r in json.loads((out / "summary.json").read_text())["rows"]] == ["quantize:int4"]
