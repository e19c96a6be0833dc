"""RMU (WMDP, Li et al. 2024): steer one layer's output on forget data to c*u, keep it on
retain data, train the MLPs up to that layer (or what rmu_trainable says)."""

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from ...errors import ConfigError
from ..base import option
from ..registry import register_term
from .common import layer_output, per_sequence_mse, rows


@dataclasses.dataclass(frozen=True)
class RMUOptions:
    rmu_layer: int = option(7, "the layer whose output is steered (7 for 7B models)")
    rmu_steering_coeff: float = option(20.0, "c: length of the control vector c*u")
    rmu_seed: int = option(0, "seed of the fixed random direction u")
    rmu_trainable: Literal["mlp", "down_proj", "all"] = option(
        "mlp", "trained parameters: mlp (gate/up/down of layers l-2..l), down_proj (their down_proj, WMDP), all"
    )


def control_vector(dim: int, options) -> jax.Array:
    """c * u with u a fixed random unit vector (uniform [0, 1) entries, normalised)."""
    u = jax.random.uniform(jax.random.PRNGKey(options.rmu_seed), (dim,), jnp.float32)
    return options.rmu_steering_coeff * u / jnp.linalg.norm(u)


def trainable_mask(params, options, num_layers: int):
    """1 on the MLP weights of layers l-2..l, 0 elsewhere; None (everything) for 'all'."""
    if options.rmu_trainable == "all":
        return None
    names = ("down_proj",) if options.rmu_trainable == "down_proj" else ("gate_proj", "up_proj", "down_proj")
    if not 0 <= options.rmu_layer < num_layers - 1:
        raise ConfigError(
            f"objective.options.rmu_layer={options.rmu_layer} must be in 0..{num_layers - 2} for this model"
        )
    layers = np.zeros(num_layers, np.float32)
    layers[max(0, options.rmu_layer - 2) : options.rmu_layer + 1] = 1.0

    def one(path, x):
        key = jax.tree_util.keystr(path)
        # the kernels, or in LoRA mode their adapters (down_proj_lora_a / _b)
        if "layers" in key and any(f"'{n}'" in key or f"'{n}_lora_" in key for n in names):
            return jnp.asarray(layers.reshape((-1,) + (1,) * (x.ndim - 1)))
        return jnp.zeros((), jnp.float32)

    return jax.tree_util.tree_map_with_path(one, params)


@register_term(
    "RMU",
    "forget",
    "||h_l(x_f) - c u||^2",
    ("forget",),
    rows("forget"),
    needs_hidden=True,
    options=RMUOptions,
    trainable_mask=trainable_mask,
)
def rmu(pol, ref, batch, options):
    h = layer_output(pol["forget"], options.rmu_layer)
    return per_sequence_mse(h, control_vector(h.shape[-1], options), batch.streams["forget"].labels)


@register_term(
    "RMU_RETAIN",
    "retain",
    "||h_l(x_r) - h_l,ref(x_r)||^2",
    ("retain",),
    rows("retain"),
    ref_streams=("retain",),
    needs_hidden=True,
    options=RMUOptions,
)
def rmu_retain(pol, ref, batch, options):
    h = layer_output(pol["retain"], options.rmu_layer)
    target = jax.lax.stop_gradient(layer_output(ref["retain"], options.rmu_layer))
    return per_sequence_mse(h, target, batch.streams["retain"].labels)
