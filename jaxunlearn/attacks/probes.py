"""Prompt probes: the forget questions asked another way (paraphrased, wrapped in a
jailbreak or role-play, after answered examples, with typos). A probe that makes the model
answer again shows the knowledge was hidden, not removed."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import yaml

from ..errors import ConfigError, DataError

BUILT_IN = Path(__file__).with_name("probes.yaml")
KINDS = ("template", "paraphrase", "in_context", "typos")


@dataclasses.dataclass(frozen=True)
class Probe:
    name: str
    kind: str
    template: str = "{question}"
    examples: int = 3
    rate: float = 0.2


def load_probes(extra_file: str | None = None) -> dict[str, Probe]:
    """The built-in probes, then `extra_file`'s (a name there replaces the built-in one)."""
    probes = {}
    for path in [BUILT_IN, *([Path(extra_file)] if extra_file else [])]:
        if not path.is_file():
            raise ConfigError(f"attack.probes_file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of probe name -> {{kind: ..., ...}}")
        for name, spec in data.items():
            probes[name] = _probe(name, spec, path)
    return probes


def _probe(name: str, spec, path: Path) -> Probe:
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise ConfigError(f"{path}: probe {name!r} needs kind: one of {', '.join(KINDS)}")
    unknown = set(spec) - {"kind", "template", "examples", "rate"}
    if unknown:
        raise ConfigError(f"{path}: probe {name!r} has unknown field(s) {sorted(unknown)}")
    probe = Probe(name=name, **spec)
    if probe.kind == "template" and "{question}" not in probe.template:
        raise ConfigError(f"{path}: probe {name!r}'s template has no {{question}} placeholder")
    return probe


def apply_probe(probe: Probe, rows: list[dict], pool: list[dict], seed: int = 0) -> list[dict] | None:
    """`rows` with their questions probed (answers unchanged); None where the probe cannot
    apply (a paraphrase probe on rows without paraphrased_question). `pool` supplies the
    in-context examples (never the row itself)."""
    rng = random.Random(seed)
    if probe.kind == "paraphrase":
        if not all(r.get("paraphrased_question") for r in rows):
            return None
        return [{**r, "question": r["paraphrased_question"]} for r in rows]
    if probe.kind == "template":
        return [{**r, "question": probe.template.format(question=r["question"])} for r in rows]
    if probe.kind == "typos":
        return [{**r, "question": add_typos(r["question"], probe.rate, rng)} for r in rows]
    if len(pool) < probe.examples + 1:
        raise DataError(f"probe {probe.name!r} needs {probe.examples + 1} forget rows, the data has {len(pool)}")
    out = []
    for r in rows:
        shots = rng.sample([p for p in pool if p["question"] != r["question"]], probe.examples)
        context = "".join(f"Q: {s['question']}\nA: {s['answer']}\n\n" for s in shots)
        out.append({**r, "question": f"{context}Q: {r['question']}\nA:"})
    return out


def add_typos(text: str, rate: float, rng: random.Random) -> str:
    """Swap two adjacent letters inside a `rate` share of the words longer than three letters."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and w.isalpha() and rng.random() < rate:
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)
