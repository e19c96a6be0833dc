"""Evaluation that reproduces the benchmarks' own conventions, and results that travel
between tools (issue 15): generation budgets, scoring truncation, the Phi template TOFU
generates with, open-unlearning's memorization definitions, aggregation from records, and
TOFU / open-unlearning logs in and out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import hmean, ks_2samp

import jaxunlearn
from conftest import run_cli
from jaxunlearn.config import load_config
from jaxunlearn.data.eval_sets import generation_prompt
from jaxunlearn.data.templates import get_template
from jaxunlearn.errors import DataError
from jaxunlearn.evaluation import metrics as M
from jaxunlearn.evaluation.aggregate import summarize
from jaxunlearn.evaluation.budgets import generation_budgets
from jaxunlearn.evaluation.logs_io import TOFU_FILES, read_evaluation, read_open_unlearning, read_tofu_logs


def test_budget_conventions_by_hand():
    lengths = [10, 50, 20, 30, 5]
    # TOFU: groups of 2 rows in dataset order, each limited by its group's longest prompt
    assert generation_budgets(lengths, "tofu", 100, tofu_batch_size=2).tolist() == [50, 50, 70, 70, 95]
    assert generation_budgets(lengths, "per_row", 100).tolist() == [90, 50, 80, 70, 95]
    assert generation_budgets(lengths, "open_unlearning", max_new_tokens=200).tolist() == [200] * 5
    assert generation_budgets([150], "per_row", 100).tolist() == [0]  # never negative
    with pytest.raises(Exception, match="generation_budget"):
        generation_budgets(lengths, "tofu200")


STEP_BY_STEP: dict = {}  # (prompt, budget) -> SmolLM2's step-by-step greedy tokens, shared by both buckets


@pytest.mark.real_model
@pytest.mark.parametrize("buckets", [(64,), (128,)], ids=["bucket64", "bucket128"])
def test_greedy_answers_take_exactly_their_budget_whatever_the_bucket(smollm2, buckets):
    """SmolLM2: each answer equals step-by-step decoding of exactly its convention's budget."""
    from test_generation import full_forward_greedy

    from jaxunlearn.evaluation.kernels import generate_texts

    model, tok = smollm2
    template = get_template("chatml", tok)
    questions = [
        "Who wrote 'Romeo and Juliet'?",
        "Name the largest planet of the solar system, please.",
        "What is two plus two?",
    ]
    prompts = [np.asarray(tok(generation_prompt(template, q))["input_ids"], np.int32) for q in questions]
    lengths = [len(p) for p in prompts]
    for convention, max_length in (("per_row", max(lengths) + 6), ("tofu", max(lengths) + 9)):
        budgets = generation_budgets(lengths, convention, max_length, tofu_batch_size=2)
        texts = generate_texts(
            model, tok, prompts, pad_id=2, eos_ids=[2], batch_size=4, budgets=budgets, buckets=buckets
        )
        for p, budget, text in zip(prompts, budgets, texts):
            key = (tuple(p.tolist()), int(budget))  # the reference does not depend on the bucket: once
            if key not in STEP_BY_STEP:
                STEP_BY_STEP[key] = full_forward_greedy(model, p[None], np.ones_like(p)[None], int(budget))[0].tolist()
            steps = STEP_BY_STEP[key]
            cut = steps.index(2) if 2 in steps else len(steps)
            assert text == tok.decode(steps[:cut], skip_special_tokens=True).strip(), (convention, budget)
    assert len(set(generation_budgets(lengths, "per_row", max(lengths) + 6).tolist())) > 1  # rows differ


def test_phi_tofu_template_generates_after_the_question_line():
    phi, tofu = get_template("phi"), get_template("phi-tofu")
    assert generation_prompt(tofu, "Who?") == "Question: Who?\n"  # TOFU: the prompt before 'Answer: '
    assert generation_prompt(phi, "Who?") == "Question: Who?\nAnswer:"
    assert tofu.format("Who?", "Me.") == phi.format("Who?", "Me.")  # scored rows are the same


def test_open_unlearning_memorization_definitions_by_hand():
    correct = np.array([1, 0, 1, 1, 1], bool)  # last token: the EOS
    assert M.exact_memorization(correct) == pytest.approx(0.8)
    assert M.exact_memorization_open_unlearning(correct) == pytest.approx(3 / 4)
    assert M.extraction_strength(correct) == pytest.approx(1 - 2 / 5)
    assert M.extraction_strength_open_unlearning(correct) == pytest.approx(1 - 2 / 4)
    last_wrong = np.array([1, 1, 1, 0, 1], bool)  # no suffix of the 4 EOS-less tokens matches
    assert M.extraction_strength(last_wrong) == pytest.approx(1 - 4 / 5)
    assert M.extraction_strength_open_unlearning(last_wrong) == pytest.approx(1 / 4)
    assert M.exact_memorization_open_unlearning(np.array([1], bool)) is None


def _eval_cfg(tiny_lm, tmp_path, *extra):
    return load_config(
        None,
        [
            f"model.path={tiny_lm}",
            f"output.dir={tmp_path}",
            "eval.num_rows=3",
            "eval.sets=[forget,retain,real_authors,world_facts]",
            "eval.max_length=48",
            "eval.cosine=false",
            "eval.batch_size=4",
            "data.forget_split=forget01",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def tiny_eval(tiny_lm, tmp_path_factory):
    from jaxunlearn.pipelines.evaluate import evaluate

    out = tmp_path_factory.mktemp("tiny_eval")
    summary = evaluate(_eval_cfg(tiny_lm, out), progress=False)
    return out, summary


def test_aggregation_from_records_equals_the_evaluations_summary(tiny_eval):
    out, summary = tiny_eval
    records, saved, fmt = read_evaluation(out)
    assert fmt == "jaxunlearn" and saved["sets"] == summary["sets"]
    again = summarize(records)
    assert again["sets"] == summary["sets"]
    for key in ("model_utility", "mia_auc"):
        assert again[key] == summary[key]
    # records without MIA scores or generations aggregate what they have
    bare = [
        {k: v for k, v in r.items() if k not in ("mia", "generation", "rougeL_recall", "token_entropy")}
        for r in records
    ]
    partial = summarize(bare)
    assert "rougeL_recall" not in partial["sets"]["forget"] and "mia_auc" not in partial
    assert partial["sets"]["retain"]["probability"] == summary["sets"]["retain"]["probability"]
    assert summary["conventions"] == {"generation_budget": "per_row", "memorization": "clean", "score_max_length": 500}


def test_evaluation_writes_open_unlearning_files_that_read_back(tiny_eval):
    out, summary = tiny_eval
    logs = json.loads((out / "TOFU_EVAL.json").read_text())
    short = json.loads((out / "TOFU_SUMMARY.json").read_text())
    assert short["forget_truth_ratio"] == pytest.approx(summary["sets"]["forget"]["truth_ratio"])
    assert logs["ra_Q_A_Prob_normalised"]["agg_value"] == pytest.approx(summary["sets"]["real_authors"]["probability"])
    assert logs["model_utility"]["agg_value"] == pytest.approx(summary["model_utility"])
    records, theirs = read_open_unlearning(out / "TOFU_EVAL.json")
    ours = [r for r in read_evaluation(out)[0] if r["set"] == "forget"]
    back = [r for r in records if r["set"] == "forget"]
    assert [r["truth_ratio"] for r in back] == pytest.approx([r["truth_ratio"] for r in ours])
    assert theirs["mia_auc"] == pytest.approx(summary["mia_auc"])


def test_generation_beside_scoring_gives_the_same_evaluation(tiny_eval, tiny_lm, tmp_path):
    """tiny_eval decoded each set's answers on a second thread while scoring it (the default
    for a single-process CPU run on one device); in order, the records are the same."""
    import jax

    from jaxunlearn.evaluation.overlap import overlaps_generation
    from jaxunlearn.pipelines.evaluate import evaluate

    if jax.local_device_count() > 1:
        pytest.skip("the default overlaps only on one device")
    assert overlaps_generation(None, None) and not overlaps_generation(False, None)
    assert not overlaps_generation(None, mesh=object())  # a model on a mesh: in order
    evaluate(_eval_cfg(tiny_lm, tmp_path, "eval.overlap_generation=false"), progress=False)
    beside, in_order = (read_evaluation(d)[0] for d in (tiny_eval[0], tmp_path))
    assert len(beside) == len(in_order) and any(r.get("generation") for r in beside)
    assert beside == in_order


def test_answers_from_scoring_give_the_same_evaluation(tiny_eval, tiny_lm, tmp_path, caplog):
    """Each set's answers started from what scoring showed (after scoring, not beside it):
    the records are the same as tiny_eval's."""
    import logging

    from jaxunlearn.pipelines.evaluate import evaluate

    with caplog.at_level(logging.INFO, logger="jaxunlearn"):
        evaluate(_eval_cfg(tiny_lm, tmp_path, "eval.answers_from_scoring=true"), progress=False)
    assert "tokens of the answers known from scoring" in caplog.text
    assert read_evaluation(tmp_path)[0] == read_evaluation(tiny_eval[0])[0]


def test_overlap_is_refused_in_a_multi_process_launch(monkeypatch):
    import jax

    from jaxunlearn.errors import ConfigError
    from jaxunlearn.evaluation.overlap import overlaps_generation

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert not overlaps_generation(None, None) and not overlaps_generation(False, None)
    with pytest.raises(ConfigError, match="overlap_generation=true in a launch of 2 processes.*null or false"):
        overlaps_generation(True, None)


def test_generation_beside_carries_precision_errors_and_stops():
    import threading
    import time

    import jax

    from jaxunlearn.evaluation.overlap import StopBetweenBatches, generation_beside

    seen = []

    def generate(x):
        def run(stop):
            seen.append((threading.current_thread().name, jax.config.jax_default_matmul_precision))
            if x < 0:
                raise ValueError("no answers for a negative row")
            return x + 1

        return run

    with jax.default_matmul_precision("highest"):
        with generation_beside(True, generate(1)) as beside:
            assert beside() == 2 and beside() == 2
        with generation_beside(False, generate(2)) as later:
            assert len(seen) == 1  # in order: nothing runs until asked
            assert later() == 3 and later() == 3
    assert seen == [("jaxunlearn-generation", "highest"), ("MainThread", "highest")]
    with pytest.raises(ValueError, match="negative row"):
        with generation_beside(True, generate(-1)) as failing:
            failing()

    batches = []  # a generation of 50 batches whose caller fails after the first

    class Bar:
        def update(self, n):
            batches.append(n)

    def slow(stop):
        for _ in range(50):
            time.sleep(0.02)
            StopBetweenBatches(Bar(), stop).update(1)

    with pytest.raises(RuntimeError, match="scoring failed"):
        with generation_beside(True, slow):
            time.sleep(0.05)
            raise RuntimeError("scoring failed")
    assert 0 < len(batches) < 50  # the worker stopped between batches, and was waited for
    assert not any(t.name == "jaxunlearn-generation" for t in threading.enumerate())


def test_a_failed_scoring_stops_the_generation_beside_it(tiny_lm, tmp_path, monkeypatch):
    import threading

    from jaxunlearn.evaluation import evaluate as evaluation
    from jaxunlearn.pipelines.evaluate import evaluate

    def fail(*args, **kwargs):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(evaluation, "score_candidates", fail)
    with pytest.raises(RuntimeError, match="scoring failed"):
        evaluate(_eval_cfg(tiny_lm, tmp_path, "eval.overlap_generation=true"), progress=False)
    assert not any(t.name == "jaxunlearn-generation" for t in threading.enumerate())


def test_scored_rows_truncated_at_score_max_length(tiny_lm, tmp_path):
    from jaxunlearn.pipelines.evaluate import evaluate

    cut = evaluate(
        _eval_cfg(
            tiny_lm,
            tmp_path / "a",
            "eval.score_max_length=40",
            "eval.generate=false",
            "eval.sets=[forget]",
            "eval.holdout_split=none",
        ),
        progress=False,
    )
    full = evaluate(
        _eval_cfg(tiny_lm, tmp_path / "b", "eval.generate=false", "eval.sets=[forget]", "eval.holdout_split=none"),
        progress=False,
    )
    assert cut["conventions"]["score_max_length"] == 40
    assert cut["sets"]["forget"]["probability"] != full["sets"]["forget"]["probability"]


# --- TOFU's eval logs, written here in the published layout -------------------------------


def _tofu_logs(seed: int, n: int = 6, k: int = 3) -> dict:
    """One value per metric and row, as locuslab/tofu's evaluate_util writes them."""
    rng = np.random.RandomState(seed)
    logs = {}
    for name in TOFU_FILES:
        idx = [str(i) for i in range(n)]
        logs[name] = {
            "avg_gt_loss": {i: float(rng.uniform(0.1, 3)) for i in idx},
            "avg_paraphrased_loss": {i: float(rng.uniform(0.5, 3)) for i in idx},
            "average_perturb_loss": {i: rng.uniform(0.5, 4, k).tolist() for i in idx},
            "rougeL_recall": {i: float(rng.uniform(0.05, 1)) for i in idx},
            "generated_text": {i: [f"[INST] q{i} [/INST]", f"gen {i}", f"answer {i}"] for i in idx},
        }
    return logs


def _tofu_aggregate_eval_stat(unlearn: dict, retain: dict) -> dict:
    """locuslab/tofu aggregate_eval_stat.py's formulas, written out on the same dicts."""
    out = {}
    for name, log in unlearn.items():
        gt = np.exp(-np.array(list(log["avg_gt_loss"].values())))
        if "eval_log" in name:
            prob = gt.mean()
        else:
            false = np.exp(-np.array(list(log["average_perturb_loss"].values())))
            prob = np.mean(gt / np.concatenate([gt[:, None], false], axis=1).sum(-1))
        stat = np.exp(
            np.array(list(log["average_perturb_loss"].values())).mean(-1)
            - np.array(list(log["avg_paraphrased_loss"].values()))
        )
        tr = np.mean(np.minimum(stat, 1 / stat)) if "forget" in name else np.mean(np.maximum(0, 1 - 1 / stat))
        out[name] = (prob, np.mean(list(log["rougeL_recall"].values())), tr)
    utility = hmean([v for name, vals in out.items() if "forget" not in name for v in vals])

    def ratios(logs):
        f = logs["eval_log_forget.json"]
        return np.exp(
            np.array(list(f["average_perturb_loss"].values())).mean(-1)
            - np.array(list(f["avg_paraphrased_loss"].values()))
        )

    return {
        "per_file": out,
        "model_utility": utility,
        "forget_quality": ks_2samp(ratios(unlearn), ratios(retain)).pvalue,
    }


def test_tofu_logs_aggregate_as_tofus_own_script(tmp_path):
    unlearn, retain = _tofu_logs(0), _tofu_logs(1)
    for name, log in unlearn.items():  # a directory of the four files
        (tmp_path / "unlearn").mkdir(exist_ok=True)
        (tmp_path / "unlearn" / name).write_text(json.dumps(log))
    (tmp_path / "retain_aggregated.json").write_text(json.dumps(retain))  # eval_log_aggregated.json layout
    want = _tofu_aggregate_eval_stat(unlearn, retain)
    got = jaxunlearn.aggregate_evaluation(tmp_path / "unlearn", retain=tmp_path / "retain_aggregated.json")
    assert got["format"] == "tofu"
    assert got["model_utility"] == pytest.approx(want["model_utility"], rel=1e-9)
    assert got["forget_quality"] == pytest.approx(want["forget_quality"], rel=1e-9)
    for name, (prob, rouge, tr) in want["per_file"].items():
        stats = got["sets"][TOFU_FILES[name]]
        assert (stats["probability"], stats["rougeL_recall"], stats["truth_ratio"]) == pytest.approx((prob, rouge, tr))
    records = read_tofu_logs(tmp_path / "unlearn")
    assert records[0]["generation"] == "gen 0" and len(records) == 4 * 6


def test_open_unlearning_retain_reference_gives_forget_quality(tiny_eval, tmp_path):
    """A retain model's TOFU_EVAL.json (written here in open-unlearning's layout) as reference."""
    out, summary = tiny_eval
    ours = [r["truth_ratio"] for r in read_evaluation(out)[0] if r["set"] == "forget"]
    theirs = [0.3, 0.9, 1.7][: len(ours)]
    ou = {
        "forget_truth_ratio": {
            "agg_value": 0.5,
            "value_by_index": {str(i): {"score": v} for i, v in enumerate(theirs)},
        },
        "mia_min_k": {"agg_value": 0.6},
    }
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(ou))
    got = jaxunlearn.aggregate_evaluation(out, retain=tmp_path / "TOFU_EVAL.json")
    assert got["forget_quality"] == pytest.approx(ks_2samp(ours, theirs).pvalue)
    assert got["privleak"]["min_k"] == pytest.approx(M.privleak(summary["mia_auc"]["min_k"], 0.6))


def test_mismatched_retain_evaluations_are_refused(tiny_eval, tmp_path):
    out, _ = tiny_eval
    records, _, _ = read_evaluation(out)
    fewer = [r for r in records if not (r["set"] == "forget" and r["index"] == 0)]
    other = [dict(r, question="another question") if r["set"] == "forget" else r for r in records]
    for name, recs in (("fewer", fewer), ("other", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(DataError, match="has 2 forget rows, this one 3"):
        jaxunlearn.aggregate_evaluation(out, retain=tmp_path / "fewer")
    with pytest.raises(DataError, match="other forget questions"):
        jaxunlearn.aggregate_evaluation(out, retain=tmp_path / "other")


@pytest.mark.subprocess
def test_aggregate_command(tiny_eval, tmp_path):
    out, summary = tiny_eval
    res = run_cli("aggregate", str(out), "--retain", str(out), "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["forget_quality"] == pytest.approx(1.0) and got["model_utility"] == pytest.approx(
        summary["model_utility"]
    )
    bad = run_cli("aggregate", str(tmp_path))
    assert bad.returncode == 2 and "holds no evaluation" in bad.stderr and "Traceback" not in bad.stderr
