"""MUSE's data (muse-bench/MUSE-News and MUSE-Books), read in place from a local copy of
the dataset repository or from the hub (`hub_layout`).

Configs and their fields: raw (forget, retain1, retain2, holdout: text), knowmem
(forget_qa, retain_qa and their *_icl in-context examples: question, answer), verbmem
(forget: prompt, gt), privleak (forget, retain, holdout: text), scal and sust (forget_1..4:
text). Books names its retain QA `retain2_qa` in some revisions; any split name is passed on.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .hub_layout import load_split
from .sources import default_data_dir

CORPORA = ("News", "Books")
FIELDS = {
    "raw": ("text",),
    "scal": ("text",),
    "sust": ("text",),
    "privleak": ("text",),
    "knowmem": ("question", "answer"),
    "verbmem": ("prompt", "gt"),
}


def repo_name(corpus: str) -> str:
    if corpus not in CORPORA:
        raise DataError(f"unknown MUSE corpus {corpus!r}; use one of {', '.join(CORPORA)}")
    return f"muse-bench/MUSE-{corpus}"


def muse_dir(corpus: str, data_dir: str | Path | None) -> str | Path:
    """data_dir as given ('hub' or a copy of the repository), else $JAXUNLEARN_DATA or
    ../shared/data's muse/MUSE-<corpus>."""
    if data_dir is not None:
        return data_dir
    base = Path(os.environ["JAXUNLEARN_DATA"]) if os.environ.get("JAXUNLEARN_DATA") else default_data_dir()
    return base / "muse" / f"MUSE-{corpus}"


def parse_split(name: str, default_config: str = "raw") -> tuple[str, str]:
    """'forget' -> (raw, forget); 'scal/forget_4' -> (scal, forget_4)."""
    config, _, split = name.rpartition("/")
    return (config or default_config), split


def load_muse(corpus: str, config: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    if config not in FIELDS:
        raise DataError(f"unknown MUSE config {config!r}; known: {', '.join(FIELDS)}")
    return load_split(repo_name(corpus), config, split, muse_dir(corpus, data_dir), FIELDS[config])


def load_muse_texts(corpus: str, name: str, data_dir: str | Path | None = None) -> list[str]:
    """The documents of a text split: 'forget', 'retain1', 'scal/forget_2', 'sust/forget_1'."""
    config, split = parse_split(name)
    if FIELDS.get(config) != ("text",):
        raise DataError(f"MUSE split {name!r} is not a text corpus; use raw/..., scal/... or sust/...")
    return [str(r["text"]) for r in load_muse(corpus, config, split, data_dir)]
