"""Objectives composed by name: "ME+GD", "IDK+AP", "NPO+KL", "GA", "GD" (finetuning) ...

L = forget_weight * L_forget + retain_weight * L_retain (SPEC section 2).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..errors import ConfigError
from .base import Term
from .options import ObjectiveOptions
from .registry import TERMS, terms_of


DEFAULT_OBJECTIVE = "ME+GD"  # the main paper's untargeted method


def known_terms() -> list[str]:
    return list(TERMS)


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    terms: tuple[tuple[Term, float], ...]  # (term, weight)
    options: ObjectiveOptions = dataclasses.field(default_factory=ObjectiveOptions)

    @property
    def policy_streams(self) -> tuple[str, ...]:
        return _union(t.policy_streams for t, _ in self.terms)

    @property
    def ref_streams(self) -> tuple[str, ...]:
        return _union(t.ref_streams for t, _ in self.terms)

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream the batches must carry."""
        return _union([self.policy_streams, self.ref_streams])

    @property
    def needs_reference(self) -> bool:
        return bool(self.ref_streams)

    @property
    def needs_hidden(self) -> bool:
        return any(t.needs_hidden for t, _ in self.terms)

    @property
    def precomputable_reference(self) -> bool:
        """Every term reading the reference reads only its sequence NLL (computed once)."""
        users = [t for t, _ in self.terms if t.needs_reference]
        return bool(users) and all(t.precomputable_reference for t in users)

    def trainable_mask(self, params, num_layers: int):
        """0/1 tree of the trained parameters (product of the terms' masks), None: all."""
        masks = [
            m
            for t, _ in self.terms
            if t.trainable_mask is not None
            for m in [t.trainable_mask(params, self.options, num_layers)]
            if m is not None
        ]
        if not masks:
            return None
        mask = masks[0]
        for other in masks[1:]:
            mask = jax.tree.map(jnp.multiply, mask, other)
        return mask

    def row_weights(self, batch, group_rows: int | None = None) -> dict[str, jnp.ndarray]:
        """Per term, a weight per row [B] of the global batch, so that the term's loss is
        sum_r weight_r * numerator_r. group_rows None: one mean over the whole batch
        (1 / its total count). group_rows k: each group of k consecutive rows takes its own
        mean and the groups are averaged (1 / (group count * number of groups)), as HF
        Trainer's gradient accumulation with k rows per device and step computes it."""
        weights = {}
        for t, _ in self.terms:
            count = t.denominator(batch, self.options)
            if group_rows is None:
                weights[t.name] = jnp.broadcast_to(1.0 / jnp.maximum(count.sum(), 1.0), count.shape)
            else:
                groups = count.reshape(-1, group_rows)
                per_group = 1.0 / (jnp.maximum(groups.sum(-1), 1.0) * groups.shape[0])
                weights[t.name] = jnp.repeat(per_group, group_rows)
        return weights

    def loss(self, pol, ref, batch, weights) -> tuple[jnp.ndarray, dict]:
        """Weighted total and each term's value, with the rows' weights from row_weights."""
        values = {t.name: (t.numerator(pol, ref, batch, self.options) * weights[t.name]).sum() for t, _ in self.terms}
        total = sum(w * values[t.name] for t, w in self.terms)
        return total, values


def _union(groups) -> tuple[str, ...]:
    out: list[str] = []
    for group in groups:
        out += [s for s in group if s not in out]
    return tuple(out)


def _find(part: str, kind: str) -> Term | None:
    return next((t for n, t in terms_of(kind).items() if n.upper() == part.upper()), None)


def build_objective(
    name: str,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    options: ObjectiveOptions | None = None,
) -> Objective:
    """Parse "FORGET+RETAIN" (either part alone is fine) into weighted terms."""
    forget, retain = terms_of("forget"), terms_of("retain")
    parts = [p.strip() for p in name.split("+")]
    if not name.strip() or len(parts) > 2 or not all(parts):
        raise ConfigError(
            f"objective {name!r} must be FORGET, RETAIN or FORGET+RETAIN with both sides named; "
            f"forget terms: {', '.join(forget)}; retain terms: {', '.join(retain)}"
        )
    terms = []
    for part in parts:
        term = _find(part, "forget") or _find(part, "retain")
        if term is None:
            raise ConfigError(
                f"unknown objective term {part!r} in {name!r}; forget terms: {', '.join(forget)}; "
                f"retain terms: {', '.join(retain)}"
            )
        terms.append((term, float(forget_weight if term.kind == "forget" else retain_weight)))
    kinds = [t.kind for t, _ in terms]
    if len(kinds) != len(set(kinds)):
        raise ConfigError(f"objective {name!r} has two {kinds[0]} terms; combine one forget and one retain term")
    if len(terms) == 2 and terms[0][0].kind == "retain":
        terms.reverse()
    return Objective(name="+".join(t.name for t, _ in terms), terms=tuple(terms), options=options or ObjectiveOptions())
