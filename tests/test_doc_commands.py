"""The documented commands cannot go stale: every `jaxunlearn ...` line in a shell block of
the README and docs parses with the real parser and, for runs, builds its config (presets
resolve, keys exist, values pass validation); the offline first-hour path of
docs/getting-started.md runs end to end (on the real SmolLM2, a few steps)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
OFFLINE_HEADING = "## Your own forget set, offline"


def shell_blocks(text: str) -> list[str]:
    """The bodies of ```bash / ```sh / ``` fences, in order."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in ("bash", "sh", "console", ""):
                    blocks.append("\n".join(lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def commands(text: str) -> list[str]:
    """`jaxunlearn ...` lines (continuations joined, comments cut); synopsis lines with
    [optional] parts or a|b choices are usage, not commands."""
    found = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            m = re.match(r"^\s*(?:\$ )?(jaxunlearn .*)$", line)
            if m and not re.search(r"\[-|\w\|\w", m.group(1)):
                found.append(m.group(1).split(" #")[0].strip())
    return found


DOCUMENTED = [(p.relative_to(REPO), c) for p in PAGES for c in commands(p.read_text())]


def _parse(command: str):
    from jaxunlearn import cli

    argv = shlex.split(command)[1:]
    parser = cli.build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # as cli.main: overrides after a flag
        assert hasattr(args, "overrides") and all("=" in x for x in extra), f"unrecognized {extra}"
        args.overrides = [*args.overrides, *extra]
    return args


@pytest.mark.parametrize("page,command", DOCUMENTED, ids=[f"{p}: {c[:60]}" for p, c in DOCUMENTED])
def test_documented_command_parses_and_its_config_builds(page, command, monkeypatch):
    from jaxunlearn.config import load_config

    monkeypatch.chdir(REPO)  # documented paths are relative to a clone's root
    args = _parse(command)
    if args.command in ("unlearn", "finetune", "eval"):
        load_config(args.config, args.overrides)


def test_the_docs_have_commands_and_an_offline_path():
    assert len(DOCUMENTED) >= 15
    text = (REPO / "docs" / "getting-started.md").read_text()
    assert OFFLINE_HEADING in text


SHRINK = {  # the same commands at a smaller scale: a few small steps, a few rows, no generation, no final checkpoint
    "finetune": ["train.max_steps=2", "train.batch_size=2", "output.final_checkpoint=false"],
    "unlearn": ["train.max_steps=2", "train.batch_size=2", "output.final_checkpoint=false"],
    "eval": ["eval.num_rows=3", "eval.generate=false"],
}


def test_the_offline_first_hour_runs(tmp_path, monkeypatch, capsys):
    """The getting-started path, command by command, in a fresh directory with the
    repository's examples: SmolLM2 learns the facts, unlearns one author, both models are
    evaluated and reported."""
    from jaxunlearn import cli

    text = (REPO / "docs" / "getting-started.md").read_text()
    section = text.split(OFFLINE_HEADING, 1)[1].split("\n## ", 1)[0]
    steps = commands(section)
    assert [shlex.split(c)[1] for c in steps] == ["finetune", "unlearn", "eval", "eval", "report"]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    for command in steps:
        argv = shlex.split(command)[1:]
        code = cli.main([*argv, *SHRINK.get(argv[0], [])])
        out, err = capsys.readouterr()
        assert code == 0, f"{command}: {err[-2000:]}"
    assert "| target |" in out and "| ME+GD |" in out
    assert (tmp_path / "runs" / "smollm2" / "unlearn" / "model" / "model.safetensors").exists()
