"""notebooks/quickstart.ipynb runs top to bottom (its code cells, in order, in one namespace)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.real_model
def test_quickstart_notebook_runs(monkeypatch, smollm2):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [("".join(c["source"])) for c in cells if c["cell_type"] == "code"]
    assert len(code) >= 4
    monkeypatch.chdir(NOTEBOOK.parent)
    namespace: dict = {"__name__": "__main__"}
    for i, src in enumerate(code):
        exec(compile(src, f"{NOTEBOOK.name}[cell {i}]", "exec"), namespace)  # noqa: S102
    assert (namespace["work"] / "quickstart.png").exists()
    assert namespace["after"]["sets"]["forget"]["probability"] != namespace["before"]["sets"]["forget"]["probability"]
    assert os.path.exists(namespace["work"] / "run" / "model" / "model.safetensors")
