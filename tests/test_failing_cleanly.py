"""Runs fail cleanly and keep their work (issue 17, first part): nonsense settings refused
before anything is written, one-line errors without a traceback, no half-written run
directory, resume that neither logs a step twice nor rewrites run.json."""

from __future__ import annotations

import json
import os

import pytest

import jaxunlearn
from conftest import TINY_TRAIN
from jaxunlearn import cli
from jaxunlearn.config import load_config
from jaxunlearn.errors import ConfigError
from jaxunlearn.objectives import build_objective

NONSENSE = [  # (override, what the error must say)
    ("train.max_steps=0", "train.max_steps=0 makes no sense: it must be at least 1"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1 makes no sense"),
    ("output.keep_checkpoints=0", "output.keep_checkpoints=0 makes no sense"),
    ("output.checkpoint_every=0", "output.checkpoint_every=0"),
    ("eval.batch_size=0", "eval.batch_size=0 makes no sense"),
    ("eval.generation_batch_size=0", "eval.generation_batch_size=0 makes no sense: it must be at least 1 \\(null"),
    ("eval.num_rows=0", "eval.num_rows=0 makes no sense: it must be at least 1 \\(null: every row\\)"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens=0"),
    ("data.max_length=1", "data.max_length=1"),
    ("data.buckets=[0,64]", "data.buckets=0"),
    ("model.remat=some", "model.remat='some' is not one of none, full, dots"),
    ("train.loss_group_rows=5", "must divide train.batch_size=32"),
    ("train.vocab_block=-1", "train.vocab_block=-1 makes no sense"),
    ("model.attention=flash", "model.attention='flash' is not one of auto, xla"),
    ("output.dir=ftp://host/run", "output.dir=ftp://host/run: ftp:// is not a supported store; use gs:// or s3://"),
    # a file given without a source that reads it would unlearn TOFU's forget10 instead
    (
        "data.forget_file=mine.jsonl",
        "data.forget_file set, but data.source=tofu does not read files: set data.source=files",
    ),
]


@pytest.mark.parametrize("override,message", NONSENSE, ids=[o for o, _ in NONSENSE])
def test_nonsense_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["ME+", "+GD", "ME++GD", " "])
def test_objective_with_an_empty_side_is_refused(name):
    with pytest.raises(ConfigError, match="both sides named"):
        build_objective(name)


def test_unknown_remat_or_dtype_in_the_python_api(tmp_path):
    with pytest.raises(ConfigError, match="remat='bogus' is not one of none, full, dots"):
        jaxunlearn.load_pretrained(tmp_path, remat="bogus")
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        jaxunlearn.load_pretrained(tmp_path, dtype="fp8")


def _main(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err


def test_malformed_yaml_is_one_line_with_its_place(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1e-5\n  epochs: [1, 2\n")
    code, err = _main(capsys, "unlearn", "--config", str(bad))
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:4:1: not valid YAML"), err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["unlearn", "train.max_steps=0"], "train.max_steps=0 makes no sense"),
        (["unlearn", "--no-progress", "train.max_steps=-2"], "train.max_steps=-2"),  # an override after a flag
        (["eval", "eval.batch_size=0"], "eval.batch_size=0 makes no sense"),
        (["generate", "some-model", "--prompt", "hi", "--max-new-tokens", "0"], "must be at least 1"),
        (["unlearn", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    ],
)
def test_command_line_errors_are_one_line_and_exit_2(argv, message, capsys):
    code, err = _main(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err, err


def _config(tiny_lm, out, *extra):
    return load_config(None, [f"model.path={tiny_lm}", f"output.dir={out}", *TINY_TRAIN, *extra])


def test_nothing_half_written_when_a_run_fails(tiny_lm, tmp_path):
    from jaxunlearn.pipelines.unlearn import unlearn

    out = tmp_path / "run"
    with pytest.raises(jaxunlearn.JaxUnlearnError):  # a missing model: checked before the directory exists
        unlearn(_config(tmp_path / "missing-model", out, "objective.name=GA"), progress=False)
    assert not out.exists()
    with pytest.raises(ConfigError, match="mesh"):  # the mesh against the devices: checked before loading
        unlearn(_config(tiny_lm, out, "objective.name=GA", "mesh.data=2"), progress=False)
    assert not out.exists()
    from jaxunlearn.training import loop

    def compile_fails(*args, **kwargs):
        raise RuntimeError("XLA: resource exhausted while compiling")

    original, loop.jit_train_step = loop.jit_train_step, compile_fails
    try:  # a failure after the directory was made, before a step finished: the directory goes
        with pytest.raises(RuntimeError, match="resource exhausted"):
            unlearn(_config(tiny_lm, out, "objective.name=GA"), progress=False)
    finally:
        loop.jit_train_step = original
    assert not out.exists()
    summary = unlearn(
        _config(tiny_lm, out, "objective.name=GA", "train.max_steps=1", "output.export=false"), progress=False
    )  # the same command with the mistake fixed simply runs
    assert summary["steps"] == 1


def test_resume_needs_a_checkpoint_and_keeps_run_json_and_metrics(tiny_lm, tmp_path):
    from jaxunlearn.pipelines.unlearn import unlearn

    out = tmp_path / "run"
    common = ["objective.name=GA", "output.export=false", "output.checkpoint_every=2", "train.warmup_steps=0"]
    unlearn(_config(tiny_lm, out, *common, "train.max_steps=4"), progress=False)
    marker = (out / "run.json").read_text()
    # a killed run may have logged steps past its last checkpoint: they are logged again, once
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5, "loss": 0.0}) + "\n")
    (out / "checkpoints" / "4").rename(out / "checkpoints" / "keep4")  # latest checkpoint now step 2
    unlearn(_config(tiny_lm, out, *common, "train.max_steps=6", "train.lr=5e-4"), resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (out / "run.json").read_text() == marker  # changed settings never rewrite it
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds no checkpoint to continue from.*--overwrite"):
        unlearn(_config(tiny_lm, empty, *common, "train.max_steps=2"), resume=True, progress=False)
    assert (empty / "run.json").exists()  # a directory this run did not create is kept


def test_exports_and_run_directories_get_normal_permissions(tiny_lm, tmp_path):
    model, tok = jaxunlearn.load_pretrained(tiny_lm)
    out = jaxunlearn.save_pretrained(model, tok, tmp_path / "export")
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o777 & ~umask)


def test_eval_and_unlearn_have_their_own_default_directories(tiny_lm, tmp_path, monkeypatch):
    from jaxunlearn.pipelines.evaluate import evaluate

    cfg = load_config(
        None,
        [
            f"model.path={tiny_lm}",
            "eval.num_rows=2",
            "eval.generate=false",
            "eval.sets=[forget]",
            "eval.holdout_split=none",
            "data.forget_split=forget01",
        ],
    )
    assert cfg.output_dir("unlearn").as_posix() == "runs/unlearn"
    monkeypatch.chdir(tmp_path)
    evaluate(cfg, progress=False)
    assert (tmp_path / "runs" / "eval" / "summary.json").exists() and not (tmp_path / "runs" / "unlearn").exists()


@pytest.fixture(scope="module")
def bad_inputs(tiny_lm, tmp_path_factory):
    """Things in the way: a model without tokenizer, pickled weights, a file where a
    directory belongs, broken summaries and retain evaluations."""
    import shutil

    root = tmp_path_factory.mktemp("bad-inputs")
    no_tokenizer = root / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_lm / name, no_tokenizer / name)
    pickled = root / "pickled"
    pickled.mkdir()
    for f in [tiny_lm / "config.json", *tiny_lm.glob("tokenizer*")]:
        shutil.copy(f, pickled / f.name)
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    (root / "a-file").write_text("")
    for name, text in [("summary-not-json", "{"), ("summary-not-eval", '{"a": 1}')]:
        (root / name).mkdir()
        (root / name / "summary.json").write_text(text)
    for name, text in [("retain-empty", ""), ("retain-malformed", "{not json\n")]:
        (root / name).mkdir()
        (root / name / "per_example.jsonl").write_text(text)
    (root / "retain-other-rows").mkdir()
    (root / "retain-other-rows" / "per_example.jsonl").write_text(
        json.dumps({"set": "forget", "question": "Who wrote something else?", "truth_ratio": 0.5}) + "\n"
    )
    return root


def _file_errors(tiny, r):
    run = [f"model.path={tiny}", *TINY_TRAIN, "objective.name=GA", "train.max_steps=1", "output.export=false"]
    ev = [f"model.path={tiny}", "eval.num_rows=2", "eval.generate=false", "data.forget_split=forget01"]
    ev += ["eval.sets=[forget]", "eval.holdout_split=none", "--no-progress"]
    return [  # (argv, what the one line must say, a path that must not appear)
        (["convert", str(tiny), str(r / "x"), "--max-shard-size", "5 apples"], "'5 apples' is not a size", r / "x"),
        (["convert", str(r / "pickled"), str(r / "y")], "opt in with --allow-pickle", r / "y"),
        (["generate", str(r / "pickled"), "--prompt", "hi"], "opt in with --allow-pickle", None),
        (
            ["unlearn", *run, f"model.path={r / 'pickled'}", f"output.dir={r / 'u0'}"],
            "model.allow_pickle=true",
            r / "u0",
        ),
        (["eval", *ev, f"model.path={r / 'pickled'}", f"output.dir={r / 'e0'}"], "model.allow_pickle=true", r / "e0"),
        (
            ["unlearn", *run, f"model.path={r / 'no-tokenizer'}", f"output.dir={r / 'u1'}"],
            "no tokenizer files",
            r / "u1",
        ),
        (["eval", *ev, f"model.path={r / 'no-tokenizer'}", f"output.dir={r / 'e1'}"], "no tokenizer files", r / "e1"),
        (["generate", str(r / "no-tokenizer"), "--prompt", "hi"], "no tokenizer files", None),
        (["unlearn", *run, f"output.dir={r / 'a-file'}"], "is a file, not a directory", None),
        (["finetune", *run, f"output.dir={r / 'a-file' / 'run'}"], "Not a directory", None),
        (["eval", *ev, f"output.dir={r / 'a-file' / 'e'}"], "Not a directory", None),
        (["convert", str(tiny), str(r / "a-file" / "m")], "is a file, not a directory", None),
        (["report", str(r / "summary-not-json")], "summary.json is not valid JSON", None),
        (["report", str(r / "summary-not-eval")], "is not a jaxunlearn evaluation summary", None),
        (["report", str(r / "summary-not-eval"), "--recompute"], "holds no evaluation", None),
        (["aggregate", str(r / "summary-not-eval"), "--out", str(r / "a-file")], "is a file, not a directory", None),
        (
            ["eval", *ev, f"eval.retain_eval={r / 'retain-empty'}", f"output.dir={r / 'e2'}"],
            "holds no records",
            r / "e2",
        ),
        (
            ["eval", *ev, f"eval.retain_eval={r / 'retain-malformed'}", f"output.dir={r / 'e3'}"],
            "not valid JSON",
            r / "e3",
        ),
        (
            ["eval", *ev, f"eval.retain_eval={r / 'retain-other-rows'}", f"output.dir={r / 'e4'}"],
            "has 1 forget rows, this one 2",
            r / "e4",
        ),
    ]


CASES = 19


@pytest.mark.parametrize("case", range(CASES))
def test_file_errors_are_one_line_with_the_fix_and_nothing_written(tiny_lm, bad_inputs, case, capsys):
    cases = _file_errors(tiny_lm, bad_inputs)
    assert len(cases) == CASES
    argv, message, must_not_exist = cases[case]
    code, err = _main(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip() and "WARNING" not in line]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert must_not_exist is None or not must_not_exist.exists()


def test_a_full_disk_is_one_line_and_leaves_no_half_written_export(tiny_lm, tmp_path, capsys, monkeypatch):
    import errno

    from jaxunlearn.checkpoints import api

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "model.safetensors"))

    monkeypatch.setattr(api, "write_safetensors", full)
    code, err = _main(capsys, "convert", str(tiny_lm), str(tmp_path / "out"))
    assert code == 2 and err.strip().startswith("error: cannot write") and "free disk space" in err, err
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []  # the temporary went too


def test_a_failed_checkpoint_write_is_one_clear_error(tiny_lm, tmp_path, capsys, monkeypatch):
    from jaxunlearn.training.checkpointing import Checkpointer

    def refuse(self, *args, **kwargs):
        raise ValueError("Error writing local file: No space left on device")

    monkeypatch.setattr(Checkpointer, "_flat", refuse)
    out = tmp_path / "run"
    argv = ["unlearn", f"model.path={tiny_lm}", *TINY_TRAIN, "objective.name=GA", "train.max_steps=1"]
    code, err = _main(capsys, *argv, f"output.dir={out}", "--no-progress")
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and line and "could not write the checkpoint of step 1" in line[0], err
    assert "free disk space" in line[0] and "Traceback" not in err


def test_feedback_a_start_block_compiling_question_bars_and_quiet_verbose(tiny_lm, tmp_path):
    """What a user sees: -v adds jaxunlearn's INFO lines but not Orbax's flood; a start-up
    block; 'compiling' before the first step; evaluation bars count questions; a default
    evaluation prints no warning."""
    from conftest import run_cli

    argv = [f"model.path={tiny_lm}", *TINY_TRAIN, "objective.name=GA", "train.max_steps=2", "output.export=false"]
    done = run_cli("-v", "unlearn", *argv, f"output.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    for line in [
        "template: chatml (auto)",
        "objective: GA; rows: forget 40",
        "steps: 2 (warmup",
        "mesh: {",
        "checkpoints:",
    ]:
        assert line in err, err
    assert "GA (compiling)" in err and "INFO template" in err
    assert "orbax" not in err.lower() and "CheckpointManager" not in err
    ev = run_cli(
        "eval", f"model.path={tiny_lm}", "eval.num_rows=3", "eval.generate=false", f"output.dir={tmp_path / 'eval'}"
    )
    assert ev.returncode == 0, ev.stderr
    assert "WARNING" not in ev.stderr, ev.stderr
    assert "eval forget: scoring" in ev.stderr and "3/3" in ev.stderr and "question" in ev.stderr


def test_report_names_rows_by_run_and_takes_labels(tmp_path, capsys):
    from jaxunlearn.evaluation.report import run_labels

    assert run_labels(["runs/x/GA_GD/eval", "runs/x/NPO/eval"]) == ["GA_GD", "NPO"]
    assert run_labels(["runs/a/eval", "other/b/eval"]) == ["runs/a", "other/b"]
    assert run_labels(["runs/x/GA/eval"]) == ["GA"] and run_labels(["r/x", "r/x"]) == ["x (1)", "x (2)"]
    summary = {"sets": {"forget": {"probability": 0.5}}, "model_utility": 0.25}
    for name in ("ME_GD", "IDK_AP"):
        (tmp_path / name / "eval").mkdir(parents=True)
        (tmp_path / name / "eval" / "summary.json").write_text(json.dumps(summary))
    runs = [str(tmp_path / "ME_GD" / "eval"), str(tmp_path / "IDK_AP" / "eval")]
    assert cli.main(["report", *runs]) == 0
    out = capsys.readouterr().out
    assert "| ME_GD |" in out and "| IDK_AP |" in out
    assert cli.main(["report", *runs, "--label", "ME+GD", "--label", "IDK+AP"]) == 0
    assert "| ME+GD |" in capsys.readouterr().out
    code, err = _main(capsys, "report", *runs, "--label", "one")
    assert code == 2 and "1 labels for 2 runs" in err


def test_presets_by_name_misfit_warnings_and_the_offline_hint(tiny_lm, smollm2, tmp_path, caplog, monkeypatch):
    import logging
    import shutil

    from jaxunlearn.checkpoints.sources import resolve
    from jaxunlearn.errors import CheckpointError
    from jaxunlearn.pipelines.loading import warn_if_config_misfits

    assert load_config("smollm2/unlearn").to_dict() == load_config("configs/smollm2/unlearn.yaml").to_dict()
    with pytest.raises(ConfigError, match="did you mean smollm2/unlearn"):
        load_config("smollm2/unlern")
    tokenizer = smollm2[1]
    assert warn_if_config_misfits(load_config("smollm2/unlearn", [f"model.path={tiny_lm}"]), tokenizer) == []
    with caplog.at_level(logging.WARNING):  # a Llama-2 preset on SmolLM2's tokenizer
        (warning,) = warn_if_config_misfits(load_config("paper/tofu/me_gd", [f"model.path={tiny_lm}"]), tokenizer)
    assert "data.template=llama2-chat" in warning and "data.template=auto or chatml" in warning
    assert warning in caplog.text
    bf16 = tmp_path / "bf16"
    shutil.copytree(tiny_lm, bf16)
    config = json.loads((bf16 / "config.json").read_text())
    (bf16 / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    cfg = load_config(None, [f"model.path={bf16}", "model.compute_dtype=float16"])
    (warning,) = warn_if_config_misfits(cfg, tokenizer)
    assert "saved in bfloat16" in warning and "float16" in warning
    # a generation setting the chosen budget ignores is named, with the budget that reads it
    cfg = load_config(None, [f"model.path={tiny_lm}", "eval.max_new_tokens=8", "eval.tofu_batch_size=4"])
    short, tofu = warn_if_config_misfits(cfg, tokenizer)
    assert short.startswith("eval.max_new_tokens=8 is not used: eval.generation_budget=per_row gives each answer")
    assert "set eval.generation_budget=open_unlearning" in short and "eval.generation_budget=tofu" in tofu
    reading = [f"model.path={tiny_lm}", "eval.generation_budget=open_unlearning", "eval.max_new_tokens=8"]
    assert warn_if_config_misfits(load_config(None, reading), tokenizer) == []
    (length,) = warn_if_config_misfits(load_config(None, [*reading, "eval.max_length=48"]), tokenizer)
    assert length.startswith("eval.max_length=48 is not used: eval.generation_budget=open_unlearning")

    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known\nretrying")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(CheckpointError, match="could not fetch 'some-org/some-model'.*--config smollm2/target") as e:
        resolve("some-org/some-model")
    assert "\n" not in str(e.value)


def test_evaluate_model_warns_a_python_caller_once_of_an_unread_budget_setting(tiny_lm, caplog):
    import logging

    from jaxunlearn.data.templates import default_template_name, get_template
    from jaxunlearn.evaluation.config import EvalSection
    from jaxunlearn.evaluation.evaluate import evaluate_model

    model, tokenizer = jaxunlearn.load_pretrained(tiny_lm)
    template = get_template(default_template_name(tokenizer), tokenizer)
    options = EvalSection(max_new_tokens=7)  # read only under generation_budget=open_unlearning
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # the second call (or a CLI that warned first) does not repeat it
            evaluate_model(model, tokenizer, template, [], options, progress=False)
    said = [r.getMessage() for r in caplog.records if "eval.max_new_tokens=7 is not used" in r.getMessage()]
    assert len(said) == 1 and "eval.generation_budget=per_row" in said[0]
