"""The docs cannot go stale: generated reference pages equal what the code generates, and
every config key, file and command a page names exists."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from jaxunlearn.config import all_keys

REPO = Path(__file__).parents[1]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]
SECTIONS = ("model", "data", "objective", "train", "mesh", "output", "continual", "eval", "attack", "lora", "flag")


def _generator():
    return runpy.run_path(str(REPO / "scripts" / "docs_reference.py"))


@pytest.mark.parametrize("name", ["config.md", "objectives.md", "metrics.md"])
def test_generated_reference_pages_are_current(name):
    gen = _generator()
    assert (gen["REFERENCE"] / name).read_text() == gen["PAGES"][name](), (
        f"docs/reference/{name} is stale: run python scripts/docs_reference.py --write"
    )


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_pages_name_only_what_exists(page):
    text = page.read_text()
    if page.name == "CHANGELOG.md":  # history may name what was renamed since
        return
    keys = set(all_keys())
    prefixes = {k.rsplit(".", 1)[0] for k in keys}
    for key in set(re.findall(r"`((?:%s)\.[a-z_][a-z0-9_.]*)" % "|".join(SECTIONS), text)):
        key = key.rstrip(".")
        parts = key.split(".")
        modules = [REPO / "jaxunlearn" / ("/".join(parts[:k]) + ".py") for k in range(2, len(parts) + 1)]
        if any(m.exists() for m in modules) or re.search(r"\.(safetensors|json|jsonl|msgpack|md|py|yaml)$", key):
            continue  # a module or a file name, not a config key
        assert key in keys or key in prefixes, f"{page.name} names the config key {key!r}, which does not exist"
    # paths of this repository; another repository's files are written repo:path
    for path in set(
        re.findall(r"(?<![\w/.:-])((?:configs|scripts|benchmarks|jaxunlearn|tests|docs|notebooks)/[\w./*-]+)", text)
    ):
        path = path.rstrip(".")
        if "..." in path:
            continue  # a placeholder (configs/.../mine.yaml)
        if "*" in path or "{" in path:
            assert list(REPO.glob(path)), f"{page.name} names {path}, which matches nothing"
        else:
            assert (REPO / path).exists(), f"{page.name} names {path}, which does not exist"
    for link in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text):
        assert (page.parent / link).exists(), f"{page.name} links to {link}, which does not exist"
    code = "\n".join(re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text))
    commands = set(re.findall(r"(?:^|[\s(])jaxunlearn ([a-z][a-z-]*[a-z])\b", code, re.M))
    from jaxunlearn.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    unknown = commands - set(sub.choices)
    assert not unknown, f"{page.name} names the command(s) {sorted(unknown)}, which do not exist"


def test_every_config_key_and_term_option_has_help():
    import dataclasses
    import typing

    from jaxunlearn.config import RunConfig

    def walk(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                assert f.metadata.get("help"), f"{prefix}{f.name} has no help text"

    walk(RunConfig)


def test_benchmark_tables_are_generated_from_the_results_file():
    """docs/benchmarks.md's generated tables equal what benchmarks/results.json renders."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "scripts" / "docs_benchmarks.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
