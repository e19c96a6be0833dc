"""Loading a run's models: the config's dtypes and pickle opt-in, a tokenizer required."""

from __future__ import annotations

import logging

from ..checkpoints.api import load_pretrained
from ..checkpoints.torch_bin import PickleRefused
from ..config import RunConfig

log = logging.getLogger(__name__)


def load_for_run(
    cfg: RunConfig, path: str | None = None, dtype: str | None = None, require_tokenizer: bool = True, **kwargs
):
    """(model, tokenizer) of `path` (default model.path) as a run config asks for it; a
    reference model (`require_tokenizer=False`) may come without tokenizer files."""
    m = cfg.model
    try:
        return load_pretrained(
            path or m.path,
            dtype=dtype or m.dtype,
            compute_dtype=m.compute_dtype,
            remat=m.remat,
            attention=m.attention,
            allow_pickle=m.allow_pickle,
            require_tokenizer=require_tokenizer,
            **kwargs,
        )
    except PickleRefused as e:  # the fix, worded for a config rather than the Python API
        raise e.naming("model.allow_pickle=true (a key=value override or in the YAML)") from None


def evaluation_mesh(cfg: RunConfig):
    """The mesh an evaluation loads its model onto: `cfg.mesh` over every device when there
    are several (all the processes' devices in a multi-host launch), None on one device."""
    import jax

    from ..parallel import initialize_distributed_from_env

    initialize_distributed_from_env()
    return cfg.mesh.build() if jax.device_count() > 1 else None


def warn_if_config_misfits(cfg: RunConfig, tokenizer) -> list[str]:
    """A preset written for one model family applied to another: say so when its prompt
    template or dtypes do not fit the model; and a generation setting that the chosen
    eval.generation_budget ignores (a warning each; the run goes on)."""
    from ..data.templates import CHAT_TEMPLATES, default_template_name
    from ..evaluation.budgets import warn_unread_budget_settings

    warnings = []
    fitting = default_template_name(tokenizer)
    chosen = cfg.data.template
    if chosen in CHAT_TEMPLATES and fitting in CHAT_TEMPLATES and chosen != fitting:
        warnings.append(
            f"data.template={chosen}, but {cfg.model.path}'s tokenizer has the special tokens of {fitting}: prompts "
            f"will not look like the model's chat format (was the config written for another model family?). "
            f"Set data.template=auto or {fitting}"
        )
    native = _checkpoint_dtype(cfg.model.path)
    if native == "bfloat16" and "float16" in (cfg.model.dtype, cfg.model.compute_dtype):
        warnings.append(
            f"{cfg.model.path} was saved in bfloat16, but the config computes in float16, whose range is far "
            "smaller (activations may overflow to inf); use bfloat16 or float32"
        )
    for text in warnings:
        log.warning(text)
    return warnings + warn_unread_budget_settings(cfg.eval)


def _checkpoint_dtype(path) -> str | None:
    import json
    from pathlib import Path

    config = Path(str(path)) / "config.json"
    try:
        return json.loads(config.read_text()).get("torch_dtype") if config.is_file() else None
    except (OSError, ValueError):
        return None


def with_adapters(cfg: RunConfig, model):
    """The model in LoRA mode when the config asks for it (lora.rank > 0, or PEFT adapters
    in lora.init_from), else unchanged."""
    lo = cfg.lora
    if lo.init_from:
        from ..checkpoints.peft import load_peft_adapters

        return load_peft_adapters(model, lo.init_from, lo.seed)
    if lo.rank > 0:
        from ..models.lora import add_lora

        return add_lora(model, lo.rank, lo.alpha, lo.targets, lo.rslora, lo.seed, lo.dropout)
    return model
