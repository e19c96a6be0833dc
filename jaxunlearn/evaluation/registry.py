"""The registry of evaluation metrics over the one scoring pass.

Three kinds, each declaring what it needs, so `evaluate_model` is a driver that never runs
the model once per metric:

- ExampleMetric: a value per example (a record field), from what the set's single pass
  produced: "scores" (log-probs and next-token statistics of the answer rows),
  "generations" (greedy answers), "embeddings" (sentence embedder) or "judge" (NLI labels).
- SetMetric: a set's number from its records (summary["sets"][set][name]).
- Aggregate: a number over sets and records (model utility, forget efficacy, MIA AUCs).

It imports none of its members: `evaluation/measures.py` registers the built-in ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

NEEDS = ("scores", "generations", "embeddings", "judge")


@dataclasses.dataclass(frozen=True)
class ExampleMetric:
    name: str  # the record field it fills
    needs: str  # one of NEEDS
    compute: Callable  # (SetPass) -> per-example values (a list, or a dict of field -> list)
    description: str = ""


@dataclasses.dataclass(frozen=True)
class SetMetric:
    name: str  # summary["sets"][set][name]
    fields: tuple[str, ...]  # record fields it reads; computed when every record has them
    compute: Callable  # (set name, records) -> value, or None where it does not apply
    description: str = ""
    column: bool = True  # a column of the report's per-set table


@dataclasses.dataclass(frozen=True)
class Aggregate:
    name: str  # summary[name]
    inputs: str  # what it reads, for the reference page
    compute: Callable  # (sets, records) -> value, or None when its inputs are missing
    description: str = ""


EXAMPLE_METRICS: dict[str, ExampleMetric] = {}
SET_METRICS: dict[str, SetMetric] = {}
AGGREGATES: dict[str, Aggregate] = {}


def _add(table: dict, item) -> Any:
    if item.name in table:
        raise ValueError(f"metric {item.name!r} is registered twice")
    table[item.name] = item
    return item


def example_metric(name: str, needs: str, description: str = ""):
    if needs not in NEEDS:
        raise ValueError(f"metric {name}: needs must be one of {NEEDS}, not {needs!r}")
    return lambda fn: (_add(EXAMPLE_METRICS, ExampleMetric(name, needs, fn, description)), fn)[1]


def set_metric(name: str, fields: tuple[str, ...], description: str = "", column: bool = True):
    return lambda fn: (_add(SET_METRICS, SetMetric(name, tuple(fields), fn, description, column)), fn)[1]


def aggregate_metric(name: str, inputs: str, description: str = ""):
    return lambda fn: (_add(AGGREGATES, Aggregate(name, inputs, fn, description)), fn)[1]


@dataclasses.dataclass
class SetPass:
    """What one evaluation set's single pass produced, for the example metrics."""

    name: str
    kind: str  # "forget" | "retain": truth-ratio aggregation, entailment direction
    evalset: Any
    scores: Any  # full statistics of the answer rows (one per example)
    tokenizer: Any
    options: Any  # the eval config section
    generations: list[str] | None = None
    references: list[str] | None = None  # cosine / entailment reference texts
    embedder: Any = None
    judge: Any = None

    @functools.cached_property
    def rouge(self):
        """ROUGE-L recall of each generation against its answer, computed once per set
        (the ROUGE metric and the entailment gate both read it)."""
        from .metrics import rouge_l_recall

        return rouge_l_recall(self.generations, self.evalset.references)
