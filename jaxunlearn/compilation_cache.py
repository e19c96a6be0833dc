"""A persistent XLA compilation cache for the CLI: a second run of the same command (same
model shapes, batch, mesh and jax version) loads its compiled steps from disk instead of
compiling them again (on CPU the unrolled decoding loop alone takes seconds).

Where: `--compilation-cache DIR` or `$JAXUNLEARN_COMPILATION_CACHE`, else
`$XDG_CACHE_HOME/jaxunlearn/xla` (~/.cache/jaxunlearn/xla); `off` turns it off. Only
compilations that took at least MIN_COMPILE_SECONDS are stored."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "JAXUNLEARN_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false")
MIN_COMPILE_SECONDS = 1.0


def default_location() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get(ENV) or os.path.join(base, "jaxunlearn", "xla")


def enable(location: str | os.PathLike | None = None) -> str | None:
    """Point jax's persistent cache at `location` (default `default_location()`) and return
    it; None when it is off. A remote location (gs://...) is passed through as it is: jax
    writes there through etils.epath."""
    import jax

    location = str(location or default_location())
    if location.lower() in OFF:
        return None
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", location)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return location
