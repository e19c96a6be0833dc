"""The objective section of the run config: term names, weights, every term's options."""

from __future__ import annotations

import dataclasses

from ..settings import setting
from .compose import DEFAULT_OBJECTIVE
from .options import ObjectiveOptions


@dataclasses.dataclass
class ObjectiveSection:
    name: str = setting(
        DEFAULT_OBJECTIVE, "FORGET+RETAIN term names, e.g. ME+GD, IDK+AP, NPO+KL, GA (see docs/reference/objectives.md)"
    )
    forget_weight: float = setting(0.1, "gamma: weight of the forget term")
    retain_weight: float = setting(1.0, "alpha: weight of the retain term")
    options: ObjectiveOptions = setting(ObjectiveOptions, "every term's options (objective.options.<name>)")
