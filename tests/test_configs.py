"""Every shipped config loads and validates; the paper presets carry the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxunlearn.config import load_config
from jaxunlearn.objectives import build_objective

CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml") if p.name != "demo.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path)
    o = cfg.objective
    build_objective(o.name, o.forget_weight, o.retain_weight, o.options)


def test_paper_me_gd_preset():
    cfg = load_config(Path(__file__).parents[1] / "configs/paper/tofu/me_gd.yaml")
    assert (cfg.objective.name, cfg.objective.forget_weight, cfg.objective.retain_weight) == ("ME+GD", 0.1, 1.0)
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.train.seed) == (1e-5, 5, 32, 1001)
    assert cfg.data.pad_to == 500 and cfg.objective.options.me_positions == "all_padded"
    assert (cfg.model.dtype, cfg.model.compute_dtype) == ("float32", "bfloat16") and cfg.data.template == "llama2-chat"


def test_demo_config_stages_load():
    from jaxunlearn.config import config_from_dict, read_yaml

    data = read_yaml(Path(__file__).parents[1] / "configs/demo.yaml")
    demo = data.pop("demo")
    config_from_dict(dict(data), demo["finetune"])
    for overrides in demo["methods"].values():
        cfg = config_from_dict(dict(data), [*demo["unlearn_common"], *overrides])
        build_objective(cfg.objective.name, cfg.objective.forget_weight, cfg.objective.retain_weight)


def test_presets_page_lists_every_preset_as_configured():
    import runpy

    gen = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "docs_presets.py"))
    page = gen["PAGE"].read_text()
    assert gen["page_table"](page) == gen["table"](), (
        "docs/reference/presets.md is stale: run python scripts/docs_presets.py --write"
    )
