"""ObjectiveOptions: every registered term's option fields in one frozen dataclass, the
config section `objective.options` (keys such as objective.options.me_epsilon)."""

from . import terms  # noqa: F401  (registers every term)
from .registry import TERMS, compose_options

ObjectiveOptions = compose_options(TERMS.values())
