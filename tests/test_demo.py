"""The demo pipeline end to end on a shrunk configuration (tiny model, few rows, 1 method)."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO


@pytest.mark.real_model
def test_demo_pipeline_shrunk(tiny_lm, tmp_path):
    from jaxunlearn.pipelines.demo import run_demo

    cfg = {
        "base": str(REPO / "configs" / "models" / "smollm2-135m.yaml"),
        "model": {"path": str(tiny_lm)},
        "data": {"max_length": 128, "buckets": [128]},
        "eval": {
            "sets": ["forget", "retain"],
            "holdout_split": "none",
            "num_rows": 4,
            "batch_size": 4,
            "max_length": 40,
            "cosine": False,
        },
        "demo": {
            "forget_split": "forget01",
            "forget_rows": 4,
            "retain_split": "retain90",
            "retain_rows": 4,
            "finetune": ["train.lr=1e-3", "train.max_steps=2", "train.batch_size=4"],
            "unlearn_common": ["train.max_steps=2", "train.batch_size=4"],
            "methods": {"GA+GD": ["objective.name=GA+GD", "objective.forget_weight=1.0"]},
        },
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run_demo(path, tmp_path / "out", progress=False)
    assert first["stages"]["target"] != "cached" and "unlearn GA+GD" in first["stages"]
    for name in ("retain_model", "target", "GA_GD"):
        assert (tmp_path / "out" / "eval" / name / "summary.json").exists()
    report = (tmp_path / "out" / "report" / "README.md").read_text()
    assert "forget_quality" in report and "| GA_GD |" in report
    assert (tmp_path / "out" / "report" / "comparison.png").exists()
    assert (tmp_path / "out" / "unlearn" / "GA_GD" / "model" / "model.safetensors").exists()
    second = run_demo(path, tmp_path / "out", progress=False)  # the finetuned models come from the cache
    assert second["stages"]["target"] == "cached" and second["stages"]["retain"] == "cached"
