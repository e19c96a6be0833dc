"""The one helper every config section uses: a field with its default and help text.

Sections live with the subsystem that reads them (checkpoints: ModelSection, data:
DataSection, objectives: ObjectiveSection, parallel: MeshSection, training: Train,
Output and Continual sections, evaluation: EvalSection); `config.py` composes them into
the run config. The help text feeds `--help` and docs/reference/config.md."""

from __future__ import annotations

import dataclasses


def setting(default, help: str):  # noqa: A002 - the word --help and the reference page use
    """A config field: its default (lists and sections are copied per instance) and its help
    text, which `--help` and docs/reference/config.md show."""
    meta = {"help": help}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
