"""Unlearning objectives: forget terms, retain terms and their composition by name."""

from .base import ObjectiveOptions, StreamOutputs, Term
from .compose import Objective, build_objective, known_terms
from .terms import FORGET_TERMS, RETAIN_TERMS

__all__ = ["ObjectiveOptions", "StreamOutputs", "Term", "Objective", "build_objective", "known_terms",
           "FORGET_TERMS", "RETAIN_TERMS"]
