"""Evaluation: metrics by hand, kernels against full forwards, BERT against transformers,
aggregation on a hand-built fixture, and the end-to-end `eval`/`report` path."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
from scipy.stats import ks_2samp, mannwhitneyu

import jaxunlearn
from conftest import TINY_EVAL, TINY_TRAIN
from jaxunlearn.config import load_config
from jaxunlearn.data.tokenize import TokenizedRows
from jaxunlearn.errors import DataError
from jaxunlearn.evaluation import metrics as M
from jaxunlearn.evaluation.aggregate import aggregate
from jaxunlearn.evaluation.evaluate import check_vocab
from jaxunlearn.evaluation.logs_io import read_evaluation
from jaxunlearn.evaluation.kernels import generate_texts, score_rows
from jaxunlearn.evaluation.prefix_trees import PackedTrees, choose_trees, score_prefix_trees, slot_cost


def test_probability_and_truth_ratio_by_hand():
    gt = np.array([0.5, 1.0, 2.0])
    assert M.probability(gt) == pytest.approx((math.exp(-0.5) + math.exp(-1) + math.exp(-2)) / 3)
    pert = np.array([[1.0, 2.0], [1.0, 1.0], [0.5, 3.0]])
    want = np.mean([math.exp(-g) / (math.exp(-g) + sum(math.exp(-p) for p in row)) for g, row in zip(gt, pert)])
    assert M.normalized_probability(gt, pert) == pytest.approx(want)
    para = np.array([1.0, 0.5, 2.0])
    r = M.truth_ratios(para, pert)
    np.testing.assert_allclose(r, [math.exp(1.0 - 1.5), math.exp(0.5 - 1.0), math.exp(2.0 - 1.75)])
    assert M.truth_ratio_retain(r) == pytest.approx(np.mean([max(0, 1 - x) for x in r]))
    assert M.truth_ratio_forget(r) == pytest.approx(np.mean([min(x, 1 / x) for x in r]))
    assert M.truth_ratio_forget_closer_look(r) == pytest.approx(1 - M.truth_ratio_forget(r))


def test_forget_quality_is_the_ks_p_value():
    rng = np.random.RandomState(0)
    a, b = rng.lognormal(0, 1, 300), rng.lognormal(0.3, 1, 300)
    assert M.forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert M.forget_quality(a, a) == pytest.approx(1.0)
    # TOFU's code tests exp(pert - para) = 1/R: the KS test is invariant to that monotone map
    assert M.forget_quality(1 / a, 1 / b) == pytest.approx(M.forget_quality(a, b))


def test_generation_metrics_by_hand():
    assert M.token_entropy(["a", "b", "a", "c"]) == pytest.approx(
        -(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)) / math.log2(4)
    )
    assert M.token_entropy(["x"]) == 0.0 and M.token_entropy(["x", "x", "x"]) == 0.0
    rouge = M.rouge_l_recall(["the cat sat", "nothing here"], ["the cat sat on the mat", "a dog"])
    assert rouge[0] == pytest.approx(3 / 6) and rouge[1] == 0.0
    cos = M.cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 1.0], [-1.0, -1.0]]))
    np.testing.assert_allclose(cos, [0.0, 0.0])
    assert M.cosine_similarity(np.array([[3.0, 4.0]]), np.array([[4.0, 3.0]]))[0] == pytest.approx(24 / 25)
    flags = M.entailment_flags(["entailment", "entailment", "neutral"], np.array([0.5, 0.05, 0.9]))
    np.testing.assert_array_equal(flags, [1, 0, 0])


def test_memorization_by_hand():
    assert M.exact_memorization([True, False, True, True]) == 0.75
    assert M.extraction_strength([True, True, True]) == 1.0
    assert M.extraction_strength([True, False, True, True]) == pytest.approx(1 - 2 / 4)
    assert M.extraction_strength([True, True, False]) == 0.0


def test_mia_scores_auc_and_privleak_by_hand():
    lp = np.array([-0.1, -2.0, -0.5, -3.0, -1.0])
    assert M.mia_loss(lp) == pytest.approx(1.32)
    assert M.mia_zlib(lp, "hello") == pytest.approx(6.6 / len(zlib.compress(b"hello")))
    assert M.mia_min_k(lp, 0.4) == pytest.approx(2.5)  # two lowest of five: -3, -2
    mu, sigma = np.full(5, -1.0), np.full(5, 2.0)
    assert M.mia_min_k_plus_plus(lp, mu, sigma, 0.4) == pytest.approx(-np.mean([(-3 + 1) / 2, (-2 + 1) / 2]))
    f, h = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.2, 0.4, 0.9])
    brute = np.mean([1.0 if y > x else 0.5 if y == x else 0.0 for x in f for y in h])
    assert M.auc(f, h) == pytest.approx(brute)
    assert M.auc(f, h) == pytest.approx(mannwhitneyu(h, f).statistic / (len(f) * len(h)))
    assert M.privleak(0.9, 0.5) == pytest.approx(((0.1) - (0.5)) / 0.5 * 100)
    assert M.harmonic_mean([0.5, 0.25]) == pytest.approx(1 / 3) and M.harmonic_mean([0.5, 0.0]) == 0.0


def test_aggregation_on_a_hand_built_fixture():
    sets = {
        "forget": {
            "rougeL_recall": 0.2,
            "probability": 0.1,
            "truth_ratio": 0.6,
            "truth_ratio_closer_look": 0.4,
            "cosine": 0.3,
            "entailment": 0.0,
            "token_entropy": 0.9,
        },
        "retain": {
            "probability": 0.8,
            "rougeL_recall": 0.7,
            "truth_ratio": 0.5,
            "token_entropy": 0.9,
            "cosine": 0.8,
            "entailment": 0.6,
        },
        "real_authors": {
            "probability": 0.6,
            "rougeL_recall": 0.9,
            "truth_ratio": 0.7,
            "token_entropy": 0.8,
            "cosine": 0.7,
            "entailment": 0.5,
        },
        "world_facts": {
            "probability": 0.5,
            "rougeL_recall": 0.8,
            "truth_ratio": 0.6,
            "token_entropy": 0.85,
            "cosine": 0.75,
            "entailment": 0.55,
        },
    }
    nine = [0.8, 0.7, 0.5, 0.6, 0.9, 0.7, 0.5, 0.8, 0.6]
    records = [{"set": "forget", "mia": {"loss": v}} for v in (0.5, 1.0)] + [
        {"set": "holdout", "mia": {"loss": v}} for v in (2.0, 0.7)
    ]
    out = aggregate(sets, records)
    assert out["model_utility"] == pytest.approx(9 / sum(1 / x for x in nine))
    eighteen = [
        sets[s][k]
        for s in ("retain", "real_authors", "world_facts")
        for k in ("rougeL_recall", "probability", "truth_ratio", "token_entropy", "cosine", "entailment")
    ]
    assert out["model_utility_closer_look"] == pytest.approx(18 / sum(1 / x for x in eighteen))
    assert out["forget_efficacy"] == pytest.approx(1 - np.mean([0.2, 0.1, 0.4, 0.3, 0.0]))
    assert out["mia_auc"]["loss"] == pytest.approx(0.75)  # holdout > forget in 3 of 4 pairs


def _rows(seed=0, n=5, vocab=101):
    rng = np.random.RandomState(seed)
    ids, labels = [], []
    for _ in range(n):
        length = rng.randint(6, 30)
        x = rng.randint(3, vocab, length).astype(np.int32)
        y = x.copy()
        y[: rng.randint(1, 5)] = -100
        ids.append(x)
        labels.append(y)
    return TokenizedRows(ids, labels)


def test_score_kernel_matches_full_forward(tiny_checkpoints):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    rows = _rows()
    full = score_rows(model, rows, pad_id=0, batch_size=4, buckets=(16, 32))
    light = score_rows(model, rows, pad_id=0, batch_size=4, buckets=(16, 32), full_stats=False)
    for i, (x, y) in enumerate(zip(rows.ids, rows.labels)):
        logits = np.asarray(model(x[None]))[0, :-1].astype(np.float64)
        logp = (
            logits
            - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - logits.max(-1, keepdims=True)
        )
        sup = y[1:] != -100
        want = logp[np.arange(len(x) - 1), np.where(sup, y[1:], 0)][sup]
        np.testing.assert_allclose(full.token_logp[i], want, atol=1e-4)
        np.testing.assert_allclose(light.token_logp[i], want, atol=1e-4)
        p = np.exp(logp[sup])
        np.testing.assert_allclose(full.mu[i], (p * logp[sup]).sum(-1), atol=1e-4)
        np.testing.assert_array_equal(full.correct[i], logits[sup].argmax(-1) == y[1:][sup])
    np.testing.assert_allclose(full.avg_nll, light.avg_nll, rtol=1e-5)


def _candidate_rows(seed=1, vocab=101):
    """Questions with several candidates each (a shared prompt, varied continuations), a
    candidate whose prompt differs by one token, a row with nothing supervised and a row
    supervised from its first token."""
    rng = np.random.RandomState(seed)
    ids, labels = [], []
    for _ in range(5):
        prompt = rng.randint(3, vocab, rng.randint(2, 20)).astype(np.int32)
        for _ in range(rng.randint(1, 5)):
            x = np.concatenate([prompt, rng.randint(3, vocab, rng.randint(1, 25)).astype(np.int32)])
            y = x.copy()
            y[: len(prompt)] = -100
            ids.append(x)
            labels.append(y)
    changed = ids[0].copy()
    changed[np.flatnonzero(labels[0] == -100)[-1]] = 2  # never drawn above
    ids.append(changed), labels.append(labels[0].copy())
    ids.append(rng.randint(3, vocab, 9).astype(np.int32)), labels.append(np.full(9, -100, np.int32))
    x = rng.randint(3, vocab, 12).astype(np.int32)
    ids.append(x), labels.append(x.copy())
    return TokenizedRows(ids, labels)


def test_prefix_trees_merge_shared_prefixes():
    rows = _candidate_rows()
    trees = PackedTrees.build(rows, 512, pad_id=0)
    assert len(trees.ids) == 1 and trees.nodes[0] < rows.lengths().sum()
    seen = trees.ancestors(0)
    for r, x in enumerate(rows.ids):
        slots = trees.row_slots[r]
        np.testing.assert_array_equal(trees.ids[0][slots], x)  # a row's path spells the row
        np.testing.assert_array_equal(trees.depth[0][slots], np.arange(len(x)))
        assert seen[slots[-1]].sum() == len(x) and seen[slots[-1], slots].all()  # it sees exactly its prefix
    narrow = PackedTrees.build(rows, 48, pad_id=0)  # rows that do not fit start a new sequence
    assert len(narrow.ids) > 1 and narrow.nodes.max() <= 48 and narrow.nodes.sum() > trees.nodes[0]
    with pytest.raises(ValueError, match="does not fit"):
        PackedTrees.build(rows, 16, pad_id=0)


def test_tree_width_is_the_one_of_least_estimated_compute(smollm2):
    config = smollm2[0].config
    rng = np.random.default_rng(0)
    shot = rng.integers(5, 1000, 600).astype(np.int32)  # few-shot examples every question shares

    def rows(shared):
        ids = [np.concatenate([shared, rng.integers(5, 1000, 40)]).astype(np.int32) for _ in range(64)]
        return TokenizedRows(ids, [x.copy() for x in ids])

    def cost(trees):
        return len(trees.ids) * trees.ids.shape[1] * slot_cost(config, trees.ids.shape[1])

    # a 600-token prompt shared by every row (tried: its 768 bucket and doublings): wide
    # sequences compute it once for many rows; unrelated rows: the narrowest, where attention costs least
    for data, widths, want in (
        (rows(shot), (768, 1536, 3072), 1536),
        (rows(np.zeros(0, np.int32)), (256, 512, 1024, 2048), 256),
    ):
        chosen = choose_trees(data, 0, config)
        assert cost(chosen) == min(cost(PackedTrees.build(data, w, 0)) for w in widths)
        assert chosen.ids.shape[1] == want
    assert choose_trees(rows(shot), 0, config, width=1024).ids.shape[1] == 1024  # a width given is kept


@pytest.mark.parametrize("width", [None, 48, 256])  # 256: attention in two blocks of 128 queries
def test_prefix_tree_scoring_equals_whole_rows(tiny_checkpoints, width):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    rows = _candidate_rows()
    full = np.arange(len(rows)) % 3 == 0
    want = score_rows(model, rows, pad_id=0, batch_size=4, buckets=(16, 32, 64))
    got = score_prefix_trees(model, rows, pad_id=0, full=full, batch_size=4, width=width)
    for i in range(len(rows)):
        np.testing.assert_allclose(got.token_logp[i], want.token_logp[i], atol=1e-5, err_msg=str(i))
        if full[i]:
            np.testing.assert_allclose(got.mu[i], want.mu[i], atol=1e-5)
            np.testing.assert_allclose(got.sigma[i], want.sigma[i], atol=1e-5)
            np.testing.assert_array_equal(got.correct[i], want.correct[i])
        else:
            assert not got.mu[i].any() and not got.correct[i].any()
    assert len(got.token_logp[-2]) == 0 and got.avg_nll[-2] == 0.0  # nothing supervised


def test_generate_texts_matches_step_by_step(tiny_lm, smollm2):
    from test_generation import full_forward_greedy

    tok = smollm2[1]
    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    prompts = [np.asarray(tok(t)["input_ids"], np.int32) for t in ("Who wrote this?", "Tell me a story about it")]
    texts = generate_texts(model, tok, prompts, pad_id=2, eos_ids=[2], batch_size=2, budgets=[8, 8], buckets=(16,))
    for p, text in zip(prompts, texts):
        steps = full_forward_greedy(model, p[None], np.ones_like(p)[None], 8)[0].tolist()
        cut = steps.index(2) if 2 in steps else len(steps)
        assert text == tok.decode(steps[:cut], skip_special_tokens=True).strip()


def test_decoding_batch_size_makes_the_fewest_even_batches():
    from jaxunlearn.evaluation.kernels import DECODE_ROWS, DECODE_TOKENS, decoding_batch_size

    assert DECODE_ROWS == 64
    assert decoding_batch_size(20, None) == 20  # one batch, not 16 + a short 4
    assert decoding_batch_size(300, None) == 60  # five even batches of at most 64
    assert decoding_batch_size(65, None) == 33
    assert decoding_batch_size(21, None, multiple=2) == 22  # rows split evenly over 2 devices
    assert decoding_batch_size(200, None, multiple=2) == 100  # 64 rows per device
    assert decoding_batch_size(40, None, row_tokens=DECODE_TOKENS // 8) == 8  # long prompts: a bounded cache
    assert decoding_batch_size(3, None, row_tokens=10 * DECODE_TOKENS) == 1
    assert decoding_batch_size(20, 16) == 16 and decoding_batch_size(0, None) == 1
    with pytest.raises(ValueError, match="batch_size=0: a decoding batch needs at least 1 row"):
        decoding_batch_size(20, 0)


def test_generate_texts_default_batches_are_even_and_answer_the_same(tiny_lm, smollm2, monkeypatch):
    from jaxunlearn.evaluation import generation, kernels

    tok = smollm2[1]
    model, _ = jaxunlearn.load_pretrained(tiny_lm)
    words = ("Who wrote this?", "Tell me a story about it", "Why", "Name three books by the author, please")
    prompts = [np.asarray(tok(t)["input_ids"], np.int32) for t in words] * 2  # 8 prompts
    budgets = [5, 8, 3, 8, 6, 2, 8, 7]
    fixed = generate_texts(model, tok, prompts, 2, [2], batch_size=2, budgets=budgets, buckets=(16,))
    shapes = []
    real_call = generation.decoding_call

    def spy(model, input_ids, *args, **kwargs):
        shapes.append(np.shape(input_ids))
        return real_call(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(kernels, "decoding_call", spy)
    monkeypatch.setattr(kernels, "DECODE_ROWS", 3)  # 8 rows: three even batches of 3 (the last padded)
    even = generate_texts(model, tok, prompts, 2, [2], budgets=budgets, buckets=(16,))
    assert shapes == [(3, 16)] * 3
    assert even == fixed and len(set(fixed)) > 2  # greedy answers do not depend on the batching


def test_bert_encoder_matches_transformers():
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    from jaxunlearn.evaluation.bert import SentenceEmbedder, minilm_path

    emb = SentenceEmbedder()
    texts = ["The capital of France is Paris.", "Paris is France's capital city.", "Turtles swim slowly."]
    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.no_padding()
    enc = tok.encode_batch(texts)
    width = max(len(e.ids) for e in enc)
    ids, mask = np.zeros((3, width), np.int64), np.zeros((3, width), np.int64)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
    with torch.no_grad():
        ref = (
            BertModel.from_pretrained(str(minilm_path()))
            .eval()(torch.tensor(ids), attention_mask=torch.tensor(mask))
            .last_hidden_state.numpy()
        )
    ours = np.asarray(emb.model(ids.astype(np.int32), mask.astype(np.int32)))
    assert np.abs(ours - ref)[mask.astype(bool)].max() <= 1e-4
    pooled = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
    np.testing.assert_allclose(emb.encode(texts), pooled, atol=1e-4)
    e = emb.encode(texts)
    assert e[0] @ e[1] > 0.8 and e[0] @ e[2] < 0.3


def test_vocab_mismatch_and_missing_retain_eval(tiny_checkpoints, smollm2, tmp_path):
    model, _ = jaxunlearn.load_pretrained(tiny_checkpoints("llama_gqa"))
    with pytest.raises(DataError, match="tokenizer has 49152 tokens but the model's vocabulary is 101"):
        check_vocab(model, smollm2[1])
    with pytest.raises(DataError, match="retain model's evaluation.*jaxunlearn eval"):
        read_evaluation(tmp_path)


def test_empty_split(tmp_path):
    from jaxunlearn.evaluation.sets import load_sets

    (tmp_path / "tofu").mkdir()
    for name in ("forget01_perturbed", "holdout01"):
        (tmp_path / "tofu" / f"{name}.json").write_text("")
    cfg = load_config(None, [f"data.data_dir={tmp_path}", "data.forget_split=forget01", "eval.sets=[forget]"])
    with pytest.raises(DataError, match="evaluation set 'forget' is empty"):
        load_sets(cfg.data, cfg.eval)


@pytest.mark.subprocess
def test_eval_and_report_cli_end_to_end(tiny_lm, tmp_path, capsys):
    from conftest import run_cli

    common = [f"model.path={tiny_lm}", *TINY_TRAIN, *TINY_EVAL]
    a = run_cli("eval", *common, f"output.dir={tmp_path / 'a'}", "--no-progress")
    assert a.returncode == 0, a.stderr[-3000:]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["sets"]) == {"forget", "retain", "real_authors", "world_facts", "holdout"}
    assert {"model_utility", "mia_auc"} <= set(summary) and summary["embedding_model"] == "all-MiniLM-L6-v2"
    recs = [json.loads(x) for x in (tmp_path / "a" / "per_example.jsonl").read_text().splitlines()]
    forget = [r for r in recs if r["set"] == "forget"]
    assert len(forget) == 4 and {"truth_ratio", "generation", "rougeL_recall", "cosine", "mia"} <= set(forget[0])
    assert (tmp_path / "a" / "report.md").exists() and (tmp_path / "a" / "truth_ratio.png").exists()
    # forget quality against a "retain model" evaluation: the same model gives p = 1
    # the second run, the refusal and the report run in this process: a child would spend ~8 s on imports
    from jaxunlearn import cli

    argv = ["eval", *common, f"output.dir={tmp_path / 'b'}", f"eval.retain_eval={tmp_path / 'a'}"]
    assert cli.main([*argv, "eval.generate=false", "--no-progress"]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["forget_quality"] == pytest.approx(1.0)

    capsys.readouterr()
    assert cli.main(["eval", *common, f"output.dir={tmp_path / 'a'}"]) != 0
    assert "already holds an evaluation" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    assert "| a |" in capsys.readouterr().out and (tmp_path / "cmp" / "comparison.png").exists()


def test_entailment_gate_reads_the_sets_one_rouge():
    """Entailment is forced to 0 where ROUGE-L recall < 0.1, from the ROUGE the set computed once."""
    import types

    from jaxunlearn.evaluation.measures import entailment, rouge
    from jaxunlearn.evaluation.registry import SetPass

    class Judge:  # says "entailment" for every pair
        def labels(self, premises, hypotheses):
            return ["entailment"] * len(premises)

    refs = ["The author was born in Paris.", "She writes crime novels."]
    done = SetPass(
        "forget",
        "forget",
        types.SimpleNamespace(references=refs),
        None,
        None,
        None,
        generations=["The author was born in Paris.", "Nothing relevant here."],
        references=refs,
        judge=Judge(),
    )
    assert rouge(done)[0] == pytest.approx(1.0) and rouge(done)[1] < 0.1
    assert entailment(done) == [1.0, 0.0]
    assert "rouge" in vars(done)  # computed once, kept for every metric that reads it
