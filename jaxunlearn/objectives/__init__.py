"""Unlearning objectives: forget terms, retain terms (one file each under terms/, registered
by decorator) and their composition by name."""

from .base import StepBatch, StreamBatch, StreamOutputs, Term, option
from .compose import Objective, build_objective, known_terms
from .options import ObjectiveOptions
from .registry import TERMS, register_term, terms_of

FORGET_TERMS = terms_of("forget")
RETAIN_TERMS = terms_of("retain")

__all__ = [
    "ObjectiveOptions",
    "StepBatch",
    "StreamBatch",
    "StreamOutputs",
    "Term",
    "option",
    "Objective",
    "build_objective",
    "known_terms",
    "TERMS",
    "register_term",
    "terms_of",
    "FORGET_TERMS",
    "RETAIN_TERMS",
]
