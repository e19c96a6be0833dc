"""Beyond TOFU (issue 21): corpus unlearning, MUSE's metrics, multiple choice equal to
lm-eval, the lm-eval adapter, task vectors, and clear errors on bad benchmark data. Data
are the schema-exact synthetic files of examples/synthetic_benchmarks.py."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import REPO
from jaxunlearn import cli
from jaxunlearn.data.choice import check_rows, context, continuations, load_task
from jaxunlearn.data.corpus import encode_corpus, encode_prefixed_text, open_unlearning_chunks
from jaxunlearn.data.muse import load_muse
from jaxunlearn.data.tokenize import IGNORE
from jaxunlearn.errors import DataError

sys.path.insert(0, str(REPO / "examples"))
import synthetic_benchmarks  # noqa: E402

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    synthetic_benchmarks.write_muse(root)
    synthetic_benchmarks.write_choice(root)
    return root


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    import jaxunlearn

    return jaxunlearn.load_pretrained(tiny_lm)


@pytest.fixture(scope="module")
def torch_tiny(tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32).eval()


# --- corpus windows ------------------------------------------------------------------------


def _reference_pretraining_windows(tokenizer, texts, window):
    """open-unlearning's PretrainingDataset + preprocess_pretraining_instance, step by step."""
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    chunks = [tokenizer.decode(ids[i * window : (i + 1) * window]) for i in range(len(ids) // window + 1)]
    out = []
    for chunk in chunks:
        full = tokenizer(chunk, add_special_tokens=True)["input_ids"]
        prefix = len(tokenizer("", add_special_tokens=True)["input_ids"])
        full = full[: prefix + window]
        labels = [IGNORE] * max(prefix, 1) + full[max(prefix, 1) :]
        out.append((full, labels))
    return out


def test_corpus_windows_are_open_unlearnings(tiny):
    tokenizer = tiny[1]
    texts = ["First document about a town.", "Second one, with more words in it than the first one has."]
    rows = encode_corpus(tokenizer, texts, 8)
    ref = [(f, lab) for f, lab in _reference_pretraining_windows(tokenizer, texts, 8) if any(x != IGNORE for x in lab)]
    assert len(rows) == len(ref) >= 3
    for ids, labels, (f, lab) in zip(rows.ids, rows.labels, ref):
        assert ids.tolist() == f and labels.tolist() == lab and labels[0] == IGNORE
    per_doc = encode_corpus(tokenizer, texts, 8, chunking="documents")
    assert all(len(x) <= 8 for x in per_doc.ids) and len(open_unlearning_chunks(tokenizer, texts, 8)) == len(ref)
    with pytest.raises(DataError, match="empty"):
        encode_corpus(tokenizer, ["", "  "], 8)


def test_a_qa_objective_on_a_corpus_is_refused_with_the_fix(tiny_lm, bench_data, tmp_path, capsys):
    argv = ["unlearn", f"model.path={tiny_lm}", "data.source=muse", f"data.data_dir={bench_data}/muse/MUSE-News"]
    argv += [
        "data.forget_split=forget",
        "data.retain_split=retain1",
        "objective.name=IDK+AP",
        f"output.dir={tmp_path}/x",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "forget_idk" in err and "GA, GD, KL, NPO" in err and not (tmp_path / "x").exists()


def test_corpus_unlearning_and_muse_evaluation_end_to_end(tiny_lm, bench_data, tmp_path, capsys):
    muse = f"data.data_dir={bench_data}/muse/MUSE-News"
    small = ["muse.verbmem_max_new_tokens=8", "muse.knowmem_max_new_tokens=6", "muse.num_rows=4", "eval.batch_size=4"]
    unlearn = ["unlearn", f"model.path={tiny_lm}", "data.source=muse", muse, "data.forget_split=forget"]
    unlearn += ["data.retain_split=retain1", "data.max_length=64", "objective.name=GA", "objective.forget_weight=1"]
    unlearn += [
        "train.batch_size=4",
        "train.max_steps=3",
        "train.lr=1e-3",
        "train.schedule=constant",
        "train.warmup_steps=0",
    ]
    unlearn += [f"output.dir={tmp_path}/GA", "--no-progress"]
    assert cli.main(unlearn) == 0
    metrics = [json.loads(x) for x in (tmp_path / "GA" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["lr"] == metrics[-1]["lr"] == pytest.approx(1e-3)  # constant: no warmup, no decay
    assert metrics[-1]["loss/GA"] < metrics[0]["loss/GA"]  # ascent: forget NLL grows
    evals = {}
    for name, path in (("target", tiny_lm), ("GA", tmp_path / "GA" / "model")):
        argv = ["eval", "--config", "muse/eval", f"model.path={path}", muse, *small, f"output.dir={tmp_path}/e_{name}"]
        if name == "GA":  # the target stands in for the retrained model: only its MIA AUC is needed
            argv += [f"muse.retain_eval={tmp_path}/e_target"]
            argv += ["muse.metrics=[forget_verbmem_ROUGE,forget_knowmem_ROUGE,privleak,extraction_strength]"]
        else:
            argv += ["muse.metrics=[privleak]"]
        assert cli.main([*argv, "--no-progress"]) == 0
        evals[name] = json.loads((tmp_path / f"e_{name}" / "summary.json").read_text())
    target, ga = evals["target"], evals["GA"]
    assert target["privleak_reference_auc"] == 0.5 and ga["privleak_reference_auc"] == target["mia_min_k"]["auc"]
    auc, ref = ga["mia_min_k"]["auc"], target["mia_min_k"]["auc"]
    assert ga["privleak"] == pytest.approx(((1 - auc) - (1 - ref)) / (1 - ref + 1e-10) * 100)
    oue = json.loads((tmp_path / "e_GA" / "MUSE_EVAL.json").read_text())
    assert oue["forget_verbmem_ROUGE"]["agg_value"] == ga["forget_verbmem_ROUGE"]
    assert len(oue["forget_knowmem_ROUGE"]["value_by_index"]) == 4 and (tmp_path / "e_GA" / "metrics.png").exists()
    assert "PrivLeak reference AUC" in capsys.readouterr().out
    assert cli.main(["report", f"{tmp_path}/e_target", f"{tmp_path}/e_GA", "--out", f"{tmp_path}/cmp"]) == 0
    table = capsys.readouterr().out
    assert "forget_verbmem_ROUGE" in table and "| e_GA |" in table and (tmp_path / "cmp" / "comparison.png").exists()


# --- MUSE's metrics against the reference's steps ------------------------------------------


def test_muse_prompts_truths_generations_and_mia_match_the_reference(tiny, torch_tiny, bench_data):
    import torch

    from jaxunlearn.suites.config import MuseSection
    from jaxunlearn.suites.muse import evaluate_muse, knowmem_inputs, muse_data, rouge_scores, verbmem_inputs

    model, tokenizer = tiny
    m = MuseSection(num_rows=3, verbmem_max_new_tokens=6, knowmem_max_new_tokens=5)
    data = bench_data / "muse" / "MUSE-News"
    rows, icl = load_muse("News", "knowmem", "forget_qa", data)[:3], load_muse("News", "knowmem", "forget_qa_icl", data)
    prompts, truths = knowmem_inputs(tokenizer, rows, icl, m)
    shots = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in icl)
    assert tokenizer.decode(prompts[0]) == shots + f"Question: {rows[0]['question']}\nAnswer: "
    assert truths == [r["answer"] for r in rows]
    verbmem = load_muse("News", "verbmem", "forget", data)[:3]
    vprompts, vtruths = verbmem_inputs(tokenizer, verbmem, 2048)
    assert (
        vtruths[0] == verbmem[0]["gt"].strip() and vprompts[0].tolist() == tokenizer(verbmem[0]["prompt"])["input_ids"]
    )

    records, summary = evaluate_muse(model, tokenizer, muse_data("News", data, m), m, batch_size=4)
    by_set = {}
    for r in records:
        by_set.setdefault(r["set"], []).append(r)
    for k, prompt in enumerate(vprompts):  # greedy continuations equal transformers' generate
        out = torch_tiny.generate(torch.tensor([prompt.tolist()]), max_new_tokens=6, do_sample=False, pad_token_id=2)
        text = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True).strip()
        assert by_set["forget_verbmem"][k]["generation"] == text
    f1 = [s["rougeL_f1"] for s in rouge_scores([r["generation"] for r in by_set["forget_verbmem"]], vtruths)]
    assert summary["forget_verbmem_ROUGE"] == pytest.approx(np.mean(f1))
    text = load_muse("News", "privleak", "forget", data)[0]["text"]  # Min-K% (k 0.4) of the reference's log-probs
    ids = torch.tensor([encode_prefixed_text(tokenizer, "", text, 2048)[0].tolist()])
    with torch.no_grad():
        logp = torch.log_softmax(torch_tiny(ids).logits[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
    kept = np.sort(logp.numpy()[:-1])  # tokenwise_logprobs leaves the last labelled token out
    expected = -kept[: max(1, int(len(kept) * 0.4))].mean()
    assert by_set["privleak_forget"][0]["mia_score"] == pytest.approx(expected, rel=1e-4)


def test_muse_generation_beside_scoring_gives_the_same_results(tiny, bench_data):
    from jaxunlearn.suites.config import MuseSection
    from jaxunlearn.suites.muse import evaluate_muse, muse_data

    model, tokenizer = tiny
    m = MuseSection(num_rows=3, verbmem_max_new_tokens=6, knowmem_max_new_tokens=5)
    data = muse_data("News", bench_data / "muse" / "MUSE-News", m)
    beside = evaluate_muse(model, tokenizer, data, m, batch_size=4, overlap_generation=True)
    in_order = evaluate_muse(model, tokenizer, data, m, batch_size=4, overlap_generation=False)
    assert beside == in_order and list(beside[1]) == list(in_order[1])  # records, summary, its key order
    sets = [r["set"] for r in beside[0]]
    assert sets.index("forget_verbmem") < sets.index("retain_knowmem") < sets.index("privleak_forget")
    assert list(beside[1])[:5] == [
        "benchmark",
        "corpus",
        "forget_verbmem_ROUGE",
        "forget_knowmem_ROUGE",
        "retain_knowmem_ROUGE",
    ]


# --- multiple choice: lm-eval's numbers ------------------------------------------------------


def test_choice_prompts_are_lm_evals(bench_data):
    task = load_task("mmlu", bench_data, num_fewshot=2)
    row = task.rows[0]
    dev = synthetic_benchmarks  # the dev rows come first in the file, per subject
    text = context(task, row)
    assert text.startswith(f"The following are multiple choice questions (with answers) about {row['subject']}.\n\n")
    assert text.count("\nAnswer:") == 3 and text.endswith("\nD. " + row["choices"][3] + "\nAnswer:") and dev
    assert continuations(row) == [" A", " B", " C", " D"]
    wmdp = load_task("wmdp_cyber", bench_data)
    assert context(wmdp, wmdp.rows[0]).startswith(
        "The following are multiple choice questions (with answers) about computer security.\n\n"
    )


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval (the lm-eval extra) is not installed")
def test_choice_accuracy_and_the_adapter_equal_lm_evals_hf_backend(tiny, tiny_lm, bench_data, tmp_path):
    """lm-eval's own HF backend on the same tiny model and rows: the multiple-choice scorer
    gives its accuracies and log-likelihoods; through the adapter, loglikelihood_rolling
    and generate_until give its numbers and texts."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import jaxunlearn.suites.lm_eval_model  # noqa: F401 - registers "jaxunlearn"
    from jaxunlearn.suites.choice import evaluate_choice

    write_lm_eval_tasks(tmp_path, bench_data)
    tasks = ["syn_wmdp_bio", "syn_rolling", "syn_gen"]
    results = {}
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)  # not lm-eval's 8-second index
    for name, args in (("hf", f"pretrained={tiny_lm},dtype=float32"), ("jaxunlearn", f"pretrained={tiny_lm}")):
        results[name] = lm_eval.simple_evaluate(
            model=name,
            model_args=args,
            tasks=tasks,
            task_manager=manager,
            batch_size=8,
            log_samples=True,
            device="cpu",
        )
    hf, ju = results["hf"], results["jaxunlearn"]
    ours = evaluate_choice(*tiny, load_task("wmdp_bio", bench_data))
    mc = [[r[0] for r in s["filtered_resps"]] for s in hf["samples"]["syn_wmdp_bio"]]
    np.testing.assert_allclose(np.array(ours.loglikelihoods), np.array(mc, float), atol=2e-3)
    assert ours.summary()["acc"] == hf["results"]["syn_wmdp_bio"]["acc,none"]
    assert ours.summary()["acc_stderr"] == pytest.approx(hf["results"]["syn_wmdp_bio"]["acc_stderr,none"])
    assert ju["results"]["syn_wmdp_bio"]["acc,none"] == hf["results"]["syn_wmdp_bio"]["acc,none"]
    rolling = [[s["filtered_resps"][0] for s in r["samples"]["syn_rolling"]] for r in (hf, ju)]
    np.testing.assert_allclose(rolling[1], rolling[0], rtol=1e-4)
    gen = [[s["filtered_resps"] for s in r["samples"]["syn_gen"]] for r in (hf, ju)]
    assert gen[1] == gen[0]


def write_lm_eval_tasks(folder, bench_data) -> None:
    """lm-eval task YAMLs over the synthetic files (multiple choice, rolling, generation)."""
    mc = bench_data / "wmdp" / "wmdp-bio"
    text = TASKS.format(mc=mc, corpus=bench_data / "wmdp-corpora")
    tasks = [synthetic_benchmarks.lm_eval_choice_task("syn_wmdp_bio", mc, "biology"), *text.split("---")]
    for k, task in enumerate(tasks):
        (folder / f"task{k}.yaml").write_text(task)


TASKS = """task: syn_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {corpus}/cyber-retain-corpus.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
---
task: syn_gen
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {mc}/test-00000-of-00001.parquet
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n\\n", "Question:"]
  max_gen_toks: 10
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed")
def test_lm_eval_task_index_skips_the_built_in_tasks_when_the_include_path_has_them(bench_data, tmp_path):
    from jaxunlearn.suites.lm_eval_tasks import _task_index

    write_lm_eval_tasks(tmp_path, bench_data)
    own = _task_index(["syn_wmdp_bio", "syn_gen"], str(tmp_path))
    assert "syn_gen" in own.all_tasks and "wmdp_bio" not in own.all_tasks  # lm-eval's 8-second index skipped
    both = _task_index(["syn_gen", "wmdp_bio"], str(tmp_path))  # a built-in task as well: the whole index
    assert {"syn_gen", "wmdp_bio"} <= set(both.all_tasks)


def test_choice_command_writes_tables_per_task_and_subject(tiny_lm, bench_data, tmp_path, capsys):
    argv = ["eval", "--config", "wmdp/eval", f"model.path={tiny_lm}", f"choice.data_dir={bench_data}"]
    argv += ["choice.tasks=[wmdp_bio,mmlu]", "choice.num_fewshot=0", "choice.num_rows=8"]
    argv += ["model.compute_dtype=float32", "data.template=plain", f"output.dir={tmp_path}/c", "--no-progress"]
    if HAS_LM_EVAL:  # the same rows through lm-eval, as general-utility numbers beside them
        write_lm_eval_tasks(tmp_path, bench_data)
        argv += ["choice.lm_eval_tasks=[syn_wmdp_bio]", f"choice.lm_eval_include={tmp_path}", "choice.lm_eval_limit=8"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["tasks"]["wmdp_bio"]["n"] == 8 and 0 <= summary["tasks"]["mmlu"]["acc"] <= 1
    if HAS_LM_EVAL:
        assert summary["lm_eval"]["syn_wmdp_bio"]["acc"] == summary["tasks"]["wmdp_bio"]["acc"]
    printed = capsys.readouterr().out
    assert "| wmdp_bio | 8 |" in printed and ("syn_wmdp_bio" in printed or not HAS_LM_EVAL)
    records = [json.loads(x) for x in (tmp_path / "c" / "per_example.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(len(r["loglikelihoods"]) == 4 for r in records)


# --- bad benchmark data: the file, the row, the field ---------------------------------------


@pytest.mark.parametrize(
    "row,message",
    [
        ({"question": "q", "choices": ["a", "b"]}, "row 2 lacks the field 'answer'"),
        ({"question": "q", "choices": ["a"], "answer": 0}, "row 2 field 'choices' needs at least 2 choices"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "row 2 field 'answer' is 2, out of range"),
        ({"question": "q", "choices": ["a", "b"], "answer": "B"}, "row 2 field 'answer' must be a choice index"),
    ],
)
def test_bad_questions_name_the_row_and_field(row, message):
    good = {"question": "q", "choices": ["a", "b"], "answer": 1}
    with pytest.raises(DataError, match=message):
        check_rows([good, row], "wmdp.jsonl")


def test_bad_benchmark_files_are_refused_clearly(bench_data, tmp_path, capsys):
    bad = tmp_path / "muse" / "knowmem"
    bad.mkdir(parents=True)
    (bad / "forget_qa.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match="forget_qa.jsonl: row 1 .*lacks the field 'answer'"):
        load_muse("News", "knowmem", "forget_qa", tmp_path / "muse")
    with pytest.raises(DataError, match="holds no forget_9-\\*.parquet.*Known splits there: forget_qa"):
        load_muse("News", "knowmem", "forget_9", tmp_path / "muse")
    (tmp_path / "empty.jsonl").write_text("")
    argv = [
        "unlearn",
        "model.path=smollm2-135m-instruct",
        "data.source=corpus",
        f"data.forget_file={tmp_path}/empty.jsonl",
    ]
    assert cli.main([*argv, "objective.name=GA", f"output.dir={tmp_path}/o"]) == 2
    assert "empty.jsonl has no text" in capsys.readouterr().err and not (tmp_path / "o").exists()  # before loading
    with pytest.raises(DataError, match="unknown multiple-choice task 'wmdp_geo'|unknown WMDP task"):
        load_task("wmdp_geo", bench_data)


# --- task vectors --------------------------------------------------------------------------


def test_task_vector_negation(tiny_lm, tmp_path):
    import jax
    from flax import nnx

    import jaxunlearn
    from jaxunlearn.training.task_vector import negate_task_vector

    target, tokenizer = jaxunlearn.load_pretrained(tiny_lm)
    graphdef, state = nnx.split(target)
    tuned = nnx.merge(graphdef, jax.tree.map(lambda x: x + 0.5, state))
    jaxunlearn.save_pretrained(tuned, tokenizer, tmp_path / "tuned")
    assert (
        cli.main(["task-vector", str(tiny_lm), str(tmp_path / "tuned"), "--out", str(tmp_path / "tv"), "--alpha", "2"])
        == 0
    )
    negated, _ = jaxunlearn.load_pretrained(tmp_path / "tv")
    for a, b in zip(jax.tree.leaves(nnx.split(negated)[1]), jax.tree.leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b) - 1.0, atol=1e-6)  # target - 2 x 0.5
    assert negate_task_vector(target, target).config == target.config
