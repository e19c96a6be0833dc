"""Data on the real TOFU / Closer Look files with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from jaxunlearn.data import (
    STREAMS,
    BatchIterator,
    build_eval_set,
    build_streams,
    continual_task,
    default_data_dir,
    encode_qa,
    encode_text_windows,
    get_template,
    left_pad,
    load_qa_file,
    load_real_world,
    load_refusals,
    load_text_file,
    load_tofu,
    pad_token_id,
)
from jaxunlearn.errors import DataError

pytestmark = pytest.mark.skipif(
    not (default_data_dir() / "tofu" / "full.json").exists(),
    reason=f"TOFU data not found at {default_data_dir()} (set JAXUNLEARN_DATA)",
)


@pytest.fixture(scope="session")
def tok(smollm2):
    return smollm2[1]


@pytest.fixture(scope="session")
def forget10():
    return load_tofu("forget10")


@pytest.fixture(scope="session")
def retain90():
    return load_tofu("retain90")


def test_tofu_row_counts():
    counts = {
        s: len(load_tofu(s))
        for s in (
            "full",
            "forget01",
            "forget05",
            "forget10",
            "retain90",
            "retain95",
            "retain99",
            "holdout10",
            "real_authors",
            "world_facts",
            "retain_perturbed",
        )
    }
    assert counts == {
        "full": 4000,
        "forget01": 40,
        "forget05": 200,
        "forget10": 400,
        "retain90": 3600,
        "retain95": 3800,
        "retain99": 3960,
        "holdout10": 400,
        "real_authors": 100,
        "world_facts": 117,
        "retain_perturbed": 400,
    }
    pert = load_tofu("forget10_perturbed")
    assert len(pert) == 400 and all(len(r["perturbed_answer"]) == 5 for r in pert)
    assert all(len(r["perturbed_answer"]) == 3 for r in load_tofu("real_authors_perturbed"))
    assert len(load_refusals()) == 100  # 99 newlines, no final one: readlines() gives 100, as upstream reads it
    assert len(load_real_world("forget")) == 400 and len(load_real_world("neighbor")) == 400


@pytest.mark.parametrize(
    "split,size,retain_base,tasks", [("forget01", 40, 3600, 10), ("forget05", 200, 2000, 10), ("forget10", 400, 400, 9)]
)
def test_continual_task_sizes_follow_the_paper(split, size, retain_base, tasks):
    pool = size * tasks
    for t in (1, 2, tasks):
        forget, retain = continual_task(split, t)
        assert len(forget) == size and {int(r["task_id"]) for r in forget} == {t}
        assert len(retain) == retain_base + pool - size * t  # tasks t+1.. stay in the retain set
        assert not {r["question"] for r in forget} & {r["question"] for r in retain}
    # a custom order: after unlearning tasks 3 then 1, task 1's retain set holds every other task
    forget, retain = continual_task(split, 1, unlearned=[3, 1])
    assert len(retain) == retain_base + pool - 2 * size


def supervised_text(tok, ids, labels):
    return tok.decode(ids[labels != -100])


@pytest.mark.parametrize("template_name", ["chatml", "phi", "llama2-chat", "plain", "chat"])
def test_supervised_positions_are_answer_plus_eos(tok, forget10, template_name):
    template = get_template(template_name, tok)
    row = forget10[0]
    rows = encode_qa(tok, template, [row["question"]], [row["answer"]], max_length=512)
    ids, labels = rows.ids[0], rows.labels[0]
    _, answer_text = template.format(row["question"], row["answer"])
    expected = answer_text if answer_text.endswith(tok.eos_token) else answer_text + tok.eos_token
    assert supervised_text(tok, ids, labels) == expected
    supervised = np.flatnonzero(labels != -100)
    assert supervised[-1] == len(ids) - 1 and ids[-1] == tok.eos_token_id  # exactly one EOS, last
    assert (ids == tok.eos_token_id).sum() - (template_name in ("chatml", "chat")) * 1 <= 2
    assert np.all(np.diff(supervised) == 1)  # one contiguous answer span, prompt fully ignored


def test_pairing_is_stable_and_seeded(tok, forget10, retain90):
    template = get_template("chatml", tok)
    refusals = load_refusals()
    a = build_streams(tok, template, forget10, retain90, refusals, STREAMS, 256, seed=1001)
    b = build_streams(tok, template, forget10, retain90, refusals, STREAMS, 256, seed=1001)
    c = build_streams(tok, template, forget10, retain90, refusals, ("retain",), 256, seed=7)
    assert set(c) == {"retain"}  # only the streams asked for are built
    for s in STREAMS:
        assert all(np.array_equal(x, y) for x, y in zip(a[s].ids, b[s].ids))
    assert any(not np.array_equal(x, y) for x, y in zip(a["retain"].ids, c["retain"].ids))
    # forget_idk pairs the forget question with a refusal; mismatch pairs it with the retain answer
    assert tok.decode(a["forget_idk"].ids[3]).count(forget10[3]["question"]) == 1
    pad = pad_token_id(tok)
    it = BatchIterator({"forget": a["forget"], "retain": a["retain"]}, 32, seed=1001, pad_id=pad)
    # the same forget index meets the same retain row in every epoch
    pairs = {}
    for step in range(40):  # 40 * 32 / 400 = 3.2 epochs
        index = it.global_indices(step)
        batch = it.batch_at(step)
        for row, i in enumerate(index):
            r = batch["retain"]
            key = r["input_ids"][row][r["attention_mask"][row] == 1].tobytes()  # unpadded: buckets vary
            assert pairs.setdefault(int(i), key) == key
    assert len(pairs) == 400


def test_batches_are_fixed_shape_buckets_and_resume_exactly(tok, forget10, retain90):
    template = get_template("chatml", tok)
    streams = build_streams(tok, template, forget10, retain90, None, ("forget", "retain"), 256, seed=1)
    pad = pad_token_id(tok)
    it = BatchIterator(streams, 8, seed=3, pad_id=pad, buckets=(64, 128, 256))
    first = [next(it) for _ in range(5)]
    state = json.loads(json.dumps(it.state_dict()))
    expected = [next(it) for _ in range(60)]  # crosses an epoch boundary (50 steps per epoch)
    resumed = BatchIterator(streams, 8, seed=3, pad_id=pad, buckets=(64, 128, 256))
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        for s in want:
            for k in want[s]:
                np.testing.assert_array_equal(got[s][k], want[s][k])
    lengths = {b["forget"]["input_ids"].shape[1] for b in first + expected}
    assert lengths <= {64, 128, 256}
    b = first[0]["forget"]
    assert b["input_ids"].dtype == np.int32 and b["input_ids"].shape[0] == 8
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()
    fixed = BatchIterator(streams, 8, seed=3, pad_id=pad, pad_to=500)
    assert next(fixed)["retain"]["input_ids"].shape == (8, 500)
    other_seed = BatchIterator(streams, 8, seed=4, pad_id=pad)
    assert not np.array_equal(other_seed.global_indices(0), it.global_indices(0))
    with pytest.raises(DataError, match="resume"):
        BatchIterator(streams, 16, seed=3, pad_id=pad).load_state_dict(state)


def test_each_process_builds_its_slice(tok, forget10):
    template = get_template("chatml", tok)
    streams = build_streams(tok, template, forget10, None, None, ("forget",), 256, seed=1)
    pad = pad_token_id(tok)
    whole = BatchIterator(streams, 8, seed=3, pad_id=pad).batch_at(4)["forget"]["input_ids"]
    parts = [
        BatchIterator(streams, 8, seed=3, pad_id=pad, process_index=p, process_count=2).batch_at(4) for p in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate([p["forget"]["input_ids"] for p in parts]), whole)


def test_eval_sets_hold_every_candidate(tok):
    template = get_template("chatml", tok)
    forget = build_eval_set(tok, template, load_tofu("forget10_perturbed"), "forget", 256)
    assert len(forget) == 300 and forget.num_perturbed == 5
    assert len(forget.candidates) == 300 * 7
    assert (forget.kind == 0).sum() == (forget.kind == 1).sum() == 300 and (forget.kind == 2).sum() == 1500
    authors = build_eval_set(tok, template, load_tofu("real_authors_perturbed"), "real_authors", 256)
    assert authors.num_perturbed == 3 and len(authors) == 100
    gt = authors.candidates.ids[int(np.flatnonzero(authors.kind == 0)[0])]
    para = authors.candidates.ids[int(np.flatnonzero(authors.kind == 1)[0])]
    np.testing.assert_array_equal(gt, para)  # no paraphrase here: the base answer is the answer
    ids, mask = left_pad(forget.prompts[:4], pad_token_id(tok))
    assert (mask[:, -1] == 1).all() and ids.shape[0] == 4
    assert tok.decode(ids[0][mask[0] == 1]).endswith("<|im_start|>assistant\n")


def test_eval_set_without_perturbed_answers_says_so(tok, caplog):
    template = get_template("chatml", tok)
    with caplog.at_level(logging.INFO):  # info: the holdout set has none by design; evaluation warns for others
        es = build_eval_set(tok, template, load_tofu("forget10"), "plain", 128, num_rows=5)
    assert es.num_perturbed == 0 and "truth ratio" in caplog.text


def test_user_files_in_every_format(tmp_path):
    import pandas as pd

    rows = [{"q": "Who?", "a": "Me.", "extra": 1}, {"q": "Where?", "a": "Here.", "extra": 2}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "d.csv", "d.parquet"):
        got = load_qa_file(tmp_path / name, question_key="q", answer_key="a")
        assert [(r["question"], r["answer"]) for r in got] == [("Who?", "Me."), ("Where?", "Here.")], name


def test_text_corpus_windows(tok, tmp_path):
    (tmp_path / "docs.txt").write_text("one two three four five six seven eight nine ten\nshort\n")
    docs = load_text_file(tmp_path / "docs.txt")
    rows = encode_text_windows(tok, [d["text"] for d in docs], window=4)
    assert [len(x) for x in rows.ids] == [4, 4, 2]  # 10 words, then 'short' is one token: dropped
    assert all((x == y).all() for x, y in zip(rows.ids, rows.labels))


# --- bad input ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.json does not exist"):
        load_qa_file(tmp_path / "nope.json")


def test_malformed_json_line_names_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "a", "answer": "b"}\n{"question": "c", answer}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: malformed JSON on line 2"):
        load_qa_file(tmp_path / "bad.jsonl")


def test_missing_field_names_row_and_field(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"question": "a", "answer": "b"}\n{"question": "c", "reply": "d"}\n')
    with pytest.raises(DataError, match=r"d.jsonl: row 2 .*'answer'.*reply"):
        load_qa_file(tmp_path / "d.jsonl")


def test_empty_forget_set(tok):
    with pytest.raises(DataError, match="forget set is empty"):
        build_streams(tok, get_template("chatml", tok), [], [], None, ("forget",), 64, seed=0)


def test_everything_truncated(tok, forget10):
    with pytest.raises(DataError, match="truncated to nothing"):
        encode_qa(
            tok,
            get_template("chatml", tok),
            [r["question"] for r in forget10[:3]],
            [r["answer"] for r in forget10[:3]],
            max_length=4,
        )


def test_truncation_is_counted(tok, forget10, caplog):
    template = get_template("chatml", tok)
    qs, ans = [r["question"] for r in forget10[:5]], [r["answer"] for r in forget10[:5]]
    longer = int((encode_qa(tok, template, qs, ans, max_length=512).lengths() > 40).sum())
    assert 0 < longer < 5
    with caplog.at_level(logging.WARNING):
        rows = encode_qa(tok, template, qs, ans, max_length=40)
    assert rows.truncated == longer and f"{longer} of 5 rows truncated" in caplog.text
    assert rows.lengths().max() == 40


def test_tokenizer_without_pad_uses_eos(tok, caplog):
    import copy

    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None
    with caplog.at_level(logging.WARNING):
        assert pad_token_id(no_pad) == tok.eos_token_id
    assert "padding with EOS" in caplog.text


def test_template_needing_missing_token(tok):
    with pytest.raises(DataError, match=r"llama3-instruct.*<\|start_header_id\|>"):
        get_template("llama3-instruct", tok)
    with pytest.raises(DataError, match="unknown template"):
        get_template("alpaca", tok)


@pytest.mark.subprocess
def test_tofu_hub_offline_is_a_clear_error():
    from conftest import run_python

    code = "from jaxunlearn.data import load_tofu\nload_tofu('forget01', data_dir='hub')"
    proc = run_python(code, env_extra={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "locuslab/TOFU" in proc.stderr and "local copy" in proc.stderr
