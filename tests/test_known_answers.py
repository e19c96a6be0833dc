"""Greedy answers started from what scoring showed (`evaluation.known_answers`): the same
answers as decoding from the prompt, fewer decoding steps, and the cases where nothing is
known."""

from __future__ import annotations

import numpy as np
import pytest

import jaxunlearn
from jaxunlearn.data.eval_sets import GT, EvalSet, build_eval_set
from jaxunlearn.data.templates import default_template_name, get_template
from jaxunlearn.data.tokenize import TokenizedRows, pad_token_id
from jaxunlearn.errors import ConfigError
from jaxunlearn.evaluation.evaluate import score_candidates
from jaxunlearn.evaluation.kernels import CLEAR_ULPS, RowScores, generate_texts, token_statistics
from jaxunlearn.evaluation.known_answers import known_prefixes, uses_known_answers
from jaxunlearn.objectives.token_stats import IGNORE


def _set(prompt, ids, labels) -> EvalSet:
    rows = TokenizedRows([np.asarray(ids, np.int32)], [np.asarray(labels, np.int32)])
    return EvalSet("s", [{}], rows, np.zeros(1), np.array([GT]), np.zeros(1), 0, [np.asarray(prompt, np.int32)], [""])


def _scores(clear) -> RowScores:
    clear = np.asarray(clear, bool)
    zeros = np.zeros(len(clear))
    return RowScores([zeros], [clear], [zeros], [zeros], [clear])


def test_known_prefixes_by_hand():
    x = IGNORE
    # prompt [5, 6, 7]; the scored text is the prompt, answer tokens 8 9 10 and the EOS 2
    ids, labels = [5, 6, 7, 8, 9, 10, 2], [x, x, x, 8, 9, 10, 2]

    def known(clear, prompt=(5, 6, 7), i=ids, lab=labels):
        return known_prefixes(_set(prompt, i, lab), _scores(clear), 2)

    assert known([1, 1, 1, 1])[0].tolist() == [8, 9, 10, 2]  # the whole answer, to its EOS
    assert known([1, 0, 1, 1])[0].tolist() == [8]  # up to the first token not clearly the argmax
    assert known([0, 1, 1, 1])[0].tolist() == []
    assert known([1, 1, 1, 1], prompt=(5, 6, 4))[0].tolist() == []  # the scored text starts elsewhere
    # a generation prompt that reaches into the scored answer (a template's "Answer:")
    assert known([1, 1, 1, 1], prompt=(5, 6, 7, 8))[0].tolist() == [9, 10, 2]
    # an EOS inside the answer ends it there
    assert known([1, 1, 1, 1], i=[5, 6, 7, 8, 2, 10, 2], lab=[x, x, x, 8, 2, 10, 2])[0].tolist() == [8, 2]
    # a generation prompt longer than the scored prompt, over unscored tokens: nothing known
    assert known([1, 1], i=[5, 6, 7, 8, 9, 10, 2], lab=[x, x, x, x, x, 10, 2], prompt=(5, 6, 7, 8))[0].tolist() == []


def test_clear_argmax_leaves_near_ties_to_decoding():
    logits = np.array([[[4.0, 1.0, 0.0], [2.0, 2.0 + 1e-6, 0.0], [1.0, 3.0, 0.0]]], np.float32)
    stats = token_statistics(logits, np.array([[0, 1, 0]]), np.ones((1, 3), bool), full_stats=True)
    assert np.asarray(stats["correct"]).tolist() == [[True, True, False]]
    assert np.asarray(stats["clear"]).tolist() == [[True, False, False]]  # 1e-6 apart: rounding could flip it
    assert CLEAR_ULPS * np.finfo(np.float32).eps * 2.0 > 1e-6


def test_when_answers_start_from_scoring():
    assert uses_known_answers(None, None, overlapping=False)  # decoded after scoring anyway: free
    assert not uses_known_answers(None, None, overlapping=True)
    assert uses_known_answers(True, None, overlapping=True) and not uses_known_answers(False, None, False)
    with pytest.raises(ConfigError, match="overlap_generation"):
        uses_known_answers(True, True, overlapping=True)


def test_both_orders_at_once_are_refused_before_anything_runs(tmp_path):
    from conftest import run_cli

    out = run_cli(
        "eval", "eval.answers_from_scoring=true", "eval.overlap_generation=true", f"output.dir={tmp_path / 'e'}"
    )
    assert out.returncode != 0 and "eval.overlap_generation=true" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "e").exists()


def test_generate_texts_decodes_nothing_for_answers_known_whole(smollm2, monkeypatch):
    from jaxunlearn.evaluation import kernels

    _, tok = smollm2
    monkeypatch.setattr(kernels, "decoding_layers", lambda *a, **k: pytest.fail("nothing should be decoded"))
    hello = tok("Hello there.", add_special_tokens=False)["input_ids"]
    known = [np.asarray(hello + [tok.eos_token_id]), np.asarray(hello[:2] + hello)]  # an EOS; a full budget
    texts = generate_texts(None, tok, [np.asarray([1, 2, 3])] * 2, 0, tok.eos_token_id, budgets=[8, 2], known=known)
    assert texts == ["Hello there.", tok.decode(hello[:2]).strip()]


@pytest.fixture(scope="module")
def own_answers(tiny_lm):
    """TOFU questions whose reference answers are the tiny model's own greedy answers, so
    scoring finds most of each answer's tokens to be its argmax."""
    from jaxunlearn.data import load_tofu

    model, tok = jaxunlearn.load_pretrained(tiny_lm)
    template = get_template(default_template_name(tok), tok)
    rows = [{"question": r["question"], "answer": "x"} for r in load_tofu("forget10")[:6]]
    probe = build_eval_set(tok, template, rows, "forget", 256, None)
    pad = pad_token_id(tok)
    budgets = [24] * len(rows)  # unstripped: a leading space is part of the answer's first token
    answers = generate_texts(model, tok, probe.prompts, pad, tok.eos_token_id, budgets=budgets, strip=False)
    rows = [{**r, "answer": a} for r, a in zip(rows, answers)]
    return model, tok, build_eval_set(tok, template, rows, "forget", 256, None), pad


def test_answers_from_scoring_are_the_answers_decoded_from_the_prompt(own_answers):
    model, tok, evalset, pad = own_answers
    scores, _ = score_candidates(model, evalset, pad, 4)
    known = known_prefixes(evalset, scores, tok.eos_token_id)
    assert sum(map(len, known)) >= 2 * len(known)  # most rows start known
    for budget in (24, 6):  # answers that run past, or end inside, what is known
        budgets = [budget] * len(evalset)
        plain = generate_texts(model, tok, evalset.prompts, pad, tok.eos_token_id, budgets=budgets)
        again = generate_texts(model, tok, evalset.prompts, pad, tok.eos_token_id, budgets=budgets, known=known)
        assert again == plain
    with pytest.raises(ValueError, match="sampling"):
        generate_texts(model, tok, evalset.prompts, pad, tok.eos_token_id, known=known, temperature=0.7)
