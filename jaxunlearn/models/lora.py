"""Low-rank adapters (LoRA) on the decoder's projections, stacked over layers like the base
weights (the layer scan stays one compiled body) and carrying logical axes (they shard with
FSDP / tensor parallelism like their kernels).

In LoRA mode only the adapters train and hold optimizer state; the frozen reference is the
same base weights with the adapters switched off (`adapters_off`), so no second copy of the
model exists. `merge_lora` folds them into the kernels for export."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from ..errors import ConfigError
from ..settings import setting
from .config import LoRASpec

# short names users write (lora.targets) -> the projection parameters they adapt
TARGETS = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
    "qkv": "qkv_proj",
}


class LoRAParam(nnx.Param):
    """An adapter weight: the only parameters a LoRA-mode run trains."""


def resolve_targets(model, targets) -> tuple[str, ...]:
    """Parameter names for the short or full target names the model has (q -> q_proj;
    on fused-qkv families q/k/v mean qkv_proj)."""
    present = {k for k, v in vars(model.layers).items() if isinstance(v, nnx.Param)}
    names = []
    for t in targets:
        name = TARGETS.get(t, t)
        if name in ("q_proj", "k_proj", "v_proj") and name not in present and "qkv_proj" in present:
            name = "qkv_proj"
        if name not in present:
            known = sorted(k for k in TARGETS if TARGETS[k] in present)
            raise ConfigError(
                f"lora.targets: {t!r} is not a projection of this {model.config.model_type} model; "
                f"choose from {', '.join(known)}"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def add_lora(model, rank: int, alpha: float, targets, rslora: bool = False, seed: int = 0, dropout: float = 0.0):
    """The model with adapters on `targets`: A [L, in, r] drawn as PEFT does (Kaiming-uniform,
    bound 1/sqrt(in)), B [L, r, out] zero, so the adapted model starts equal to the base.
    Adapters are fp32 whatever the base's dtype (they are the trained master weights; the
    forward casts them to the compute dtype) and go on the model in place (the base arrays
    are shared, not copied)."""
    if rank < 1:
        raise ConfigError(f"lora.rank={rank} must be at least 1")
    if not 0 <= dropout < 1:
        raise ConfigError(f"lora.dropout={dropout} must be in [0, 1)")
    targets = resolve_targets(model, targets)
    spec = LoRASpec(rank=rank, alpha=float(alpha), targets=targets, rslora=rslora, dropout=float(dropout))
    key = jax.random.key(seed)
    for i, name in enumerate(spec.targets):
        kernel = getattr(model.layers, name)
        n, d_in, d_out = kernel.shape
        axes = kernel.get_metadata().get("logical_axes") or ("layers", None, None)
        bound = 1.0 / d_in**0.5
        a = jax.random.uniform(jax.random.fold_in(key, i), (n, d_in, rank), jnp.float32, -bound, bound)
        setattr(model.layers, f"{name}_lora_a", LoRAParam(a, logical_axes=(axes[0], axes[1], "lora")))
        b = jnp.zeros((n, rank, d_out), jnp.float32)
        setattr(model.layers, f"{name}_lora_b", LoRAParam(b, logical_axes=(axes[0], "lora", axes[2])))
    model.config = model.config.replace(lora=spec)
    return model


def split_adapters(model):
    """(graphdef, adapters, base): the adapter state a LoRA run trains and the frozen rest."""
    return nnx.split(model, LoRAParam, ...)


def adapters_off(adapters):
    """The adapters with every B zeroed: with them the forward is the base model's (the
    reference in LoRA mode). Only the small B's are new arrays."""
    return jax.tree_util.tree_map_with_path(lambda path, x: jnp.zeros_like(x) if _is_b(path) else x, adapters)


def _is_b(path) -> bool:
    return any(str(getattr(k, "key", "")).endswith("_lora_b") for k in path)


def merge_lora(model):
    """A plain model (no adapters) whose kernels are W + scale * A @ B, in W's dtype."""
    spec = model.config.lora
    if spec is None:
        return model
    graphdef, state = nnx.split(model)
    merged = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))  # new Variables over the same arrays
    for name in spec.targets:
        a = getattr(merged.layers, f"{name}_lora_a")[...].astype(jnp.float32)
        b = getattr(merged.layers, f"{name}_lora_b")[...].astype(jnp.float32)
        kernel = getattr(merged.layers, name)
        delta = jnp.einsum("lir,lro->lio", a, b) * spec.scale
        kernel.set_value((kernel[...].astype(jnp.float32) + delta).astype(kernel.dtype))
        delattr(merged.layers, f"{name}_lora_a")
        delattr(merged.layers, f"{name}_lora_b")
    merged.config = merged.config.replace(lora=None)
    return merged


@dataclasses.dataclass
class LoRASection:
    """The `lora:` section of the run config: LoRA mode when rank > 0 (or adapters loaded)."""

    rank: int = setting(0, "adapter rank; 0: full-parameter training (no adapters)")
    alpha: float = setting(16.0, "scale = alpha / rank (rsLoRA: alpha / sqrt(rank))")
    targets: list[str] = setting(
        ["q", "k", "v", "o", "gate", "up", "down"], "projections that get adapters: q k v o gate up down (or qkv)"
    )
    rslora: bool = setting(False, "rank-stabilized scaling alpha / sqrt(rank)")
    dropout: float = setting(0.0, "dropout on the adapters' input in training steps (PEFT's lora_dropout)")
    init_from: str | None = setting(None, "start from PEFT adapters in this directory (adapter_config.json)")
    seed: int = setting(0, "seed of the A matrices' initialization")

    @property
    def enabled(self) -> bool:
        return self.rank > 0 or self.init_from is not None
