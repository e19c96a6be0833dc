"""Loading a run's models: the config's dtypes and pickle opt-in, a tokenizer required."""

from __future__ import annotations

from ..checkpoints.api import load_pretrained
from ..checkpoints.torch_bin import PickleRefused
from ..config import RunConfig


def load_for_run(cfg: RunConfig, path: str | None = None, dtype: str | None = None, **kwargs):
    """(model, tokenizer) of `path` (default model.path) as a run config asks for it."""
    m = cfg.model
    try:
        return load_pretrained(
            path or m.path,
            dtype=dtype or m.dtype,
            compute_dtype=m.compute_dtype,
            remat=m.remat,
            allow_pickle=m.allow_pickle,
            require_tokenizer=True,
            **kwargs,
        )
    except PickleRefused as e:  # the fix, worded for a config rather than the Python API
        raise e.naming("model.allow_pickle=true (a key=value override or in the YAML)") from None
