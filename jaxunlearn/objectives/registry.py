"""The registry of objective terms. It imports none of them: `objectives/terms/__init__.py`
lists the term files, and each registers itself with `register_term`."""

from __future__ import annotations

import dataclasses
import typing

from .base import Term

TERMS: dict[str, Term] = {}


def register_term(
    name: str,
    kind: str,
    formula: str,
    policy_streams: tuple[str, ...],
    denominator,
    ref_streams: tuple[str, ...] = (),
    **declared,
):
    """Decorator for a term's numerator: registers Term(name, ...) and returns the function."""
    if kind not in ("forget", "retain"):
        raise ValueError(f"term {name}: kind must be forget or retain, not {kind!r}")

    def wrap(numerator):
        if name in TERMS:
            raise ValueError(f"objective term {name!r} is registered twice")
        TERMS[name] = Term(
            name, kind, formula, tuple(policy_streams), tuple(ref_streams), numerator, denominator, **declared
        )
        return numerator

    return wrap


def terms_of(kind: str) -> dict[str, Term]:
    return {n: t for n, t in TERMS.items() if t.kind == kind}


def compose_options(terms) -> type:
    """One frozen dataclass holding every term's option fields (config key
    objective.options.<field>). Terms that share a field (beta: NPO, DPO, AP) must agree on
    its type and default."""
    fields: dict[str, tuple] = {}
    for term in terms:
        if term.options is None:
            continue
        hints = typing.get_type_hints(term.options)  # real types, also under `from __future__ import annotations`
        for f in dataclasses.fields(term.options):
            spec = (f.name, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
            if f.name in fields and (fields[f.name][1] != hints[f.name] or fields[f.name][2].default != f.default):
                raise ValueError(f"option {f.name!r} of term {term.name} conflicts with another term's")
            fields.setdefault(f.name, spec)
    cls = dataclasses.make_dataclass("ObjectiveOptions", list(fields.values()), frozen=True)
    cls.__module__ = __name__.rsplit(".", 1)[0] + ".options"
    return cls
