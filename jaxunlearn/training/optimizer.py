"""AdamW with the paper's schedule, and the paper's step count.

HF's `get_linear_schedule_with_warmup`: lr rises linearly from 0 over the warmup steps,
then falls linearly to 0 at the last step. Weight decay is decoupled (torch AdamW) and
skips norms and biases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

NO_DECAY_MARKERS = ("norm", "bias")


def paper_num_steps(num_rows: int, epochs: float, global_batch: int) -> int:
    """int(epochs * N) // effective batch, as the paper's forget.py (forget01 -> 6 steps)."""
    return max(1, int(epochs * num_rows) // global_batch)


def paper_warmup(num_rows: int, global_batch: int) -> int:
    """One epoch of warmup when an epoch has more than one step, else none."""
    steps_per_epoch = num_rows // global_batch
    return steps_per_epoch if steps_per_epoch > 1 else 0


def linear_warmup_decay(lr: float, total_steps: int, warmup_steps: int):
    def schedule(count):
        c = jnp.asarray(count, jnp.float32)
        warm = lr * c / max(warmup_steps, 1)
        decay = lr * jnp.maximum(0.0, total_steps - c) / max(1, total_steps - warmup_steps)
        return jnp.where(c < warmup_steps, warm, decay)

    return schedule


def warmup_constant(lr: float, warmup_steps: int):
    """HF's constant schedule (with warmup): lr after the warmup steps (MUSE's and WMDP's runs)."""

    def schedule(count):
        c = jnp.asarray(count, jnp.float32)
        return jnp.where(c < warmup_steps, lr * c / max(warmup_steps, 1), lr)

    return schedule


SCHEDULES = {
    "linear": lambda lr, total, warmup: linear_warmup_decay(lr, total, warmup),
    "constant": lambda lr, total, warmup: warmup_constant(lr, warmup),
}


def decay_mask(params):
    """True for parameters that get weight decay (not norms, not biases)."""

    def decays(path, _):
        name = jax.tree_util.keystr(path)
        return not any(marker in name for marker in NO_DECAY_MARKERS)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    schedule,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_grad_norm: float | None = None,
) -> optax.GradientTransformation:
    adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    if clip_grad_norm:
        return optax.chain(optax.clip_by_global_norm(clip_grad_norm), adamw)
    return adamw
