"""Task-vector negation (Ilharco et al. 2023; a MUSE baseline): finetune the target on the
forget corpus (`jaxunlearn finetune`), then move the target away from what that added:
theta = theta_target - alpha * (theta_finetuned - theta_target)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..errors import CheckpointError


def negate_task_vector(target, finetuned, alpha: float = 1.0):
    """A model of `target`'s graph whose float parameters are target - alpha * (finetuned - target)."""
    graphdef, base = nnx.split(target)
    _, tuned = nnx.split(finetuned)
    if jax.tree.structure(base) != jax.tree.structure(tuned):
        raise CheckpointError("the finetuned model's parameters do not match the target's; finetune that target")
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(tuned)):
        if a.shape != b.shape:
            raise CheckpointError(f"parameter shapes differ ({a.shape} vs {b.shape}): not a finetune of this target")

    def negate(a, b):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return a
        out = a.astype(jnp.float32) - alpha * (b.astype(jnp.float32) - a.astype(jnp.float32))
        return out.astype(a.dtype)

    return nnx.merge(graphdef, jax.tree.map(negate, base, tuned))
