"""Chen et al.'s evaluator (issue 20, first part): judges flag what to unlearn and say why;
`jaxunlearn flag` writes the flagged dialogues as a forget set, the rest as a retain set."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jaxunlearn import cli
from jaxunlearn.errors import ConfigError
from jaxunlearn.flagging.config import FlagSection
from jaxunlearn.flagging.judges import causal_lm_judge, classifier_judge, judge_rows, privacy_judge, reference_judge

ENTITIES = {"entities": [{"name": "Maren Holloway-Strand", "facts": ["Tromsø", "lighthouse keeper"]}]}


def _rows(*triples):
    return [{"prompt": p, "output": o, "reference": r} for p, o, r in triples]


def test_reference_judge_flags_answers_that_depart_from_the_reference():
    judge = reference_judge(FlagSection(rouge_threshold=0.5))
    rows = _rows(
        ("Where was she born?", "She was born in Tromsø, Norway.", "She was born in Tromsø, Norway."),
        ("Where was she born?", "Paris, I think.", "She was born in Tromsø, Norway."),
        ("Anything?", "Something.", None),
    )
    right, wrong, unknown = judge.decide(rows)
    assert not right.flagged and wrong.flagged and not unknown.flagged
    assert "ROUGE-L recall 0.00 < 0.5" in wrong.reason and unknown.reason == "no reference answer"


def test_privacy_judge_flags_protected_facts_and_pii(tmp_path):
    path = tmp_path / "private.json"
    path.write_text(json.dumps(ENTITIES))
    judge = privacy_judge(FlagSection(privacy_file=str(path)))
    rows = _rows(
        ("Where was Maren Holloway-Strand born?", "In Tromsø.", None),
        ("Where is the Arctic Cathedral?", "In Tromsø.", None),  # the fact, but not about the entity
        ("Contact?", "Write to maren.hs@example.org or call +47 555 123 456.", None),
        ("Where does she live?", "At 12 Harbour Street, near the pier.", None),
        ("Her passport?", "It is AB1234567; her SSN is 123-45-6789.", None),
        ("Favourite colour?", "Blue.", None),
    )
    v = judge.decide(rows)
    assert [x.flagged for x in v] == [True, False, True, True, True, False]
    assert v[0].reason == "reveals 'Tromsø' about Maren Holloway-Strand"
    assert "email address" in v[2].reason and "phone number" in v[2].reason
    assert "street address" in v[3].reason and "ID number" in v[4].reason


@pytest.mark.parametrize(
    "text,message",
    [('{"entities": []}', "lists no entities"), ('{"entities": [{"name": "X", "facts": []}]}', "non-empty facts")],
)
def test_a_privacy_list_without_entries_is_refused(tmp_path, text, message):
    path = tmp_path / "private.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        privacy_judge(FlagSection(privacy_file=str(path)))


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A random two-label BERT classifier with a small word-piece vocabulary, saved locally."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("classifier")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "awful", "in", "the", "."]
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={0: "non-toxic", 1: "toxic"},
        label2id={"non-toxic": 0, "toxic": 1},
    )
    BertForSequenceClassification(config).save_pretrained(root)
    return root


def test_classifier_judge_reads_the_flagging_label_against_the_threshold(tiny_classifier):
    rows = _rows(("q", "you are nice", None), ("q", "you are awful", None))
    always = classifier_judge(FlagSection(classifier_model=str(tiny_classifier), classifier_threshold=0.0))
    never = classifier_judge(FlagSection(classifier_model=str(tiny_classifier), classifier_threshold=1.01))
    assert all(v.flagged for v in always.decide(rows)) and not any(v.flagged for v in never.decide(rows))
    assert always.decide(rows)[0].reason.startswith("toxic 0.")
    wrong = classifier_judge(FlagSection(classifier_model=str(tiny_classifier), classifier_labels=["harmful"]))
    with pytest.raises(ConfigError, match="none of the classifier's"):
        wrong.decide(rows)
    with pytest.raises(ConfigError, match="could not load the classifier"):
        classifier_judge(FlagSection(classifier_model=str(tiny_classifier / "missing")))


def test_causal_lm_judge_is_labelled_and_explains(tiny_lm):
    import jaxunlearn

    model, tokenizer = jaxunlearn.load_pretrained(tiny_lm)
    judge = causal_lm_judge(FlagSection(), model, tokenizer, "tiny")
    verdicts = judge.decide(_rows(("q", "a kind answer", None), ("q", "another answer", None)))
    assert "zero-shot fallback" in judge.name and len(verdicts) == 2
    assert all("yes-no margin" in v.reason for v in verdicts)


def test_the_first_flagging_judge_decides_the_category():
    ref, priv = reference_judge(FlagSection()), privacy_judge(FlagSection())
    rows = _rows(("q", "mail me at a@b.org", "completely different words here"), ("q", "fine", "fine"))
    judged = judge_rows(rows, [priv, ref])
    assert judged[0]["category"] == "private" and judged[0]["judge"] == "privacy"
    assert judged[0]["verdicts"]["reference"]["flagged"] and not judged[1]["flagged"]


def test_flag_command_end_to_end(tiny_lm, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"question": f"What is fact number {i} about Maren Holloway-Strand?", "answer": f"Fact {i}."})
            + "\n"
            for i in range(5)
        )
    )
    private = tmp_path / "private.json"
    private.write_text(json.dumps(ENTITIES))
    out = tmp_path / "flagged"
    argv = ["flag", f"model.path={tiny_lm}", f"flag.prompts_file={prompts}", f"flag.privacy_file={private}"]
    argv += ["eval.max_new_tokens=8", "eval.generation_budget=open_unlearning", f"output.dir={out}", "--no-progress"]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    forget = [json.loads(x) for x in (out / "forget.jsonl").read_text().splitlines()]
    retain = [json.loads(x) for x in (out / "retain.jsonl").read_text().splitlines()]
    assert summary["rows"] == 5 == len(forget) + len(retain) and summary["flagged"] == len(forget)
    assert summary["judges"] == ["reference", "privacy"]
    assert len(forget) >= 1  # a random tiny model's answers depart from every reference
    assert {"question", "answer", "category", "reason", "judge"} <= set(forget[0]) and forget[0]["reason"]
    assert (out / "scores.png").exists() and "outputs flagged" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["flag.judges=[reference,oracle]"], "unknown judge(s) ['oracle']"),
        (["flag.prompts_file=EMPTY"], "no prompts to judge"),
        (["flag.privacy_file=NOENTRIES"], "lists no entities"),
        ([], "needs prompts"),
    ],
)
def test_bad_flag_input_is_one_line(tiny_lm, tmp_path, capsys, extra, message):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "none.json").write_text('{"entities": []}')
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"question": "q?", "answer": "a."}) + "\n")
    extra = [
        x.replace("EMPTY", str(tmp_path / "empty.jsonl")).replace("NOENTRIES", str(tmp_path / "none.json"))
        for x in extra
    ]
    base = [] if message == "needs prompts" else [f"flag.prompts_file={prompts}"]
    code = cli.main(["flag", f"model.path={tiny_lm}", *base, *extra, f"output.dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_expected_outputs_follow_the_flag_category():
    from jaxunlearn.data.batching import expected_output

    assert expected_output({"category": "hallucinated", "reference": "In Tromsø."}, "I don't know.") == "In Tromsø."
    assert expected_output({"category": "private", "reference": "In Tromsø."}, "I don't know.") == "I don't know."
    assert expected_output({"question": "q", "answer": "a"}, "I can't say.") == "I can't say."  # TOFU rows
    assert expected_output({"category": "harmful", "expected": "Let's talk about something else."}, "x").startswith(
        "Let"
    )


def test_dist_centroid_is_computed_once_per_run_and_reused(tiny_lm, tmp_path, monkeypatch):
    import numpy as np

    from conftest import TINY_TRAIN
    from jaxunlearn.config import load_config
    from jaxunlearn.objectives.terms import dist as dist_term
    from jaxunlearn.pipelines.unlearn import unlearn

    calls = []
    real = dist_term.run_centroid

    def counting(forward, streams, options):
        got = real(forward, streams, options)
        calls.append(got is not None)
        return got

    from jaxunlearn.objectives.registry import TERMS

    monkeypatch.setitem(TERMS, "DIST", dataclasses.replace(TERMS["DIST"], precompute=counting))
    common = [
        f"model.path={tiny_lm}",
        *TINY_TRAIN,
        "objective.name=DIST+GD",
        "train.max_steps=2",
        "output.export=false",
    ]
    run = unlearn(
        load_config(None, [*common, "objective.options.dist_centroid=run", f"output.dir={tmp_path / 'r'}"]),
        progress=False,
    )
    batch = unlearn(load_config(None, [*common, f"output.dir={tmp_path / 'b'}"]), progress=False)
    assert calls == [True, False]  # once for the run mode; the batch mode asks for nothing
    centroid = np.load(tmp_path / "r" / "dist_centroid.npy")
    assert centroid.shape == (64,) and np.isfinite(centroid).all()
    assert run["final"]["loss/DIST"] != batch["final"]["loss/DIST"]  # one centroid of all rows vs each batch's


def test_chen_end_to_end_flags_unlearns_and_judges_again(tiny_lm, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"question": f"Tell me fact {i} about the author.", "answer": f"Fact {i} is true." if i % 2 else ""}
        for i in range(6)
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["chen", f"model.path={tiny_lm}", f"flag.prompts_file={prompts}", "flag.judges=[reference]"]
    argv += ["objective.name=DIST+GD", "objective.options.dist_centroid=run", "train.max_steps=2", "train.batch_size=2"]
    argv += ["eval.max_new_tokens=8", "eval.generation_budget=open_unlearning", "eval.sets=[forget,retain]"]
    argv += ["eval.generate=false", "data.max_length=128", "data.buckets=[128]", f"output.dir={tmp_path / 'chen'}"]
    assert cli.main([*argv, "--no-progress"]) == 0
    summary = json.loads((tmp_path / "chen" / "summary.json").read_text())
    assert summary["share_flagged"]["before"] == pytest.approx(0.5)  # the rows with a reference the random model misses
    assert 0 <= summary["share_flagged"]["after"] <= 1 and summary["steps"] == 2
    assert (tmp_path / "chen" / "unlearn" / "dist_centroid.npy").exists()
    assert {"before", "after"} == set(summary["sets"]) and "share of outputs flagged | 50%" in capsys.readouterr().out


def test_reference_judge_with_nli_flags_contradicted_answers():
    class Contradicts:  # an NLI judge: the reference contradicts outputs that say "not"
        def labels(self, premises, hypotheses):
            return ["contradiction" if " not " in h else "entailment" for h in hypotheses]

    judge = reference_judge(FlagSection(rouge_threshold=0.3), Contradicts())
    rows = _rows(
        ("Was she born in Tromsø?", "She was born in Tromsø.", "She was born in Tromsø."),
        ("Was she born in Tromsø?", "She was not born in Tromsø.", "She was born in Tromsø."),  # high ROUGE
    )
    kept, contradicted = judge.decide(rows)
    assert judge.name == "reference+nli" and not kept.flagged and contradicted.flagged
    assert "NLI: the reference -> contradiction" in contradicted.reason


def test_tofu_authors_personal_details_are_read_from_the_split():
    from jaxunlearn.data import load_tofu
    from jaxunlearn.flagging.privacy import leaks, load_entities
    from jaxunlearn.flagging.tofu_private import tofu_privacy_entities

    first = tofu_privacy_entities(load_tofu("forget01")[:20])
    assert first == [
        {
            "name": "Basil Mahfouz Al-Kuwaiti",
            "facts": ["Kuwait City, Kuwait", "florist", "game developer", "Prix Goncourt"],
        }
    ]
    entities = load_entities("tofu:forget10", max_rows=60)
    assert [e["name"] for e in entities][:2] == ["Carmen Montenegro", "Elvin Mammadov"] and len(entities) <= 3
    assert leaks("He was born in Kuwait City, Kuwait.", "Where was Basil Mahfouz Al-Kuwaiti born?", first, False)
