"""Which rows each evaluation set holds, per data source, and how its candidates are keyed."""

from __future__ import annotations

import dataclasses

from ..data.config import DataSection
from ..data.sources import continual_eval_rows, load_qa_file, load_real_world, load_tofu
from ..data.rows import read_rows
from ..errors import ConfigError, DataError
from .config import EvalSection


@dataclasses.dataclass(frozen=True)
class SetSpec:
    name: str  # forget | retain | real_authors | world_facts | holdout
    rows: list
    base_key: str | None  # truth-ratio base answer (None: the answer itself)
    kind: str  # "forget" | "retain" (truth-ratio aggregation, entailment direction)
    reference_key: str  # cosine / entailment reference text


KNOWN_SETS = ("forget", "retain", "real_authors", "world_facts", "holdout")
FORGET_LIKE = ("forget", "holdout")  # truth ratio aggregated as TOFU's forget set; entailment direction
NORMALIZED = ("real_authors", "world_facts")  # probability normalized over the perturbed answers
UTILITY_SETS = ("retain", "real_authors", "world_facts")  # model utility's sets


def _holdout_for(forget_split: str) -> str:
    digits = "".join(c for c in forget_split if c.isdigit())
    return f"holdout{digits}"


def load_sets(data: DataSection, evaluation: EvalSection, continual_split: str | None = None) -> list[SetSpec]:
    """The configured evaluation sets' rows and how each is scored (continual_split: the
    Closer Look pool whose task evaluation.task_id is evaluated)."""
    e, d = evaluation, data
    unknown = [s for s in e.sets if s not in KNOWN_SETS]
    if unknown:
        raise ConfigError(f"unknown eval.sets {unknown}; known: {', '.join(KNOWN_SETS)}")
    names = list(e.sets)
    holdout = e.holdout_split or (_holdout_for(d.forget_split) if d.source == "tofu" else "none")
    if "forget" in names and holdout != "none" and "holdout" not in names:
        names.append("holdout")
    specs = []
    for name in names:
        rows = _rows(d, e, continual_split, name, holdout)
        if not rows:
            raise DataError(f"evaluation set {name!r} is empty; check data.source / eval.forget_split")
        ref_key = "original_answer" if rows and "original_answer" in rows[0] else "answer"
        specs.append(
            SetSpec(
                name=name,
                rows=rows,
                base_key=None if name in ("real_authors", "world_facts", "holdout") else "paraphrased_answer",
                kind="forget" if name in FORGET_LIKE else "retain",
                reference_key=ref_key,
            )
        )
    return specs


def _rows(d: DataSection, e: EvalSection, continual_split: str | None, name: str, holdout: str) -> list[dict]:
    source = d.source
    if name == "holdout":
        return load_tofu(holdout, d.data_dir)
    if source == "files" and name in ("forget", "retain"):  # your own QA files, as unlearning read them
        file = d.forget_file if name == "forget" else d.retain_file
        if not file:
            raise ConfigError(f"data.source=files evaluates the set {name!r} from data.{name}_file; set it")
        return load_qa_file(file, d.question_key, d.answer_key)
    if source == "real_world":
        file = {"forget": "forget_perturbed", "retain": "neighbor_perturbed"}.get(name)
        if file is None:
            return _tofu_or_closer(d, name)
        rows = load_real_world(file, d.data_dir)
        # the paper scores the short golden answer of the real-world sets
        return [{**r, "answer": r.get("golden_answer", r["answer"])} for r in rows]
    if name == "forget":
        if source == "closer_look":
            return continual_eval_rows(continual_split or d.forget_split, e.task_id, d.data_dir)
        return load_tofu(e.forget_split or f"{d.forget_split}_perturbed", d.data_dir)
    return _tofu_or_closer(d, name)


def _tofu_or_closer(d: DataSection, name: str) -> list[dict]:
    split = {
        "retain": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
    }[name]
    if d.source in ("closer_look", "real_world"):
        from ..data.sources import _closer_dir

        return read_rows(_closer_dir(d.data_dir) / "tofu" / f"{split}.json")
    return load_tofu(split, d.data_dir)
