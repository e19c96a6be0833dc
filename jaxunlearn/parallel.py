"""Meshes, logical-axis rules and multi-host start.

Parameters carry logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `mlp`,
`layers`, `norm`); rules map them onto the mesh axes `data`, `fsdp`, `tensor`. A dimension
is only sharded when the mesh axis divides it, so odd head counts fall back to
replication instead of failing.
"""

from __future__ import annotations

import dataclasses

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .settings import setting
from .errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or None: replicated)
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices; one axis may be -1 (the rest)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ConfigError("at most one mesh axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(f"{len(devices)} devices cannot be split into mesh axes {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ConfigError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} devices, "
            f"but {len(devices)} are available"
        )
    return Mesh(np.array(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(axes, shape, mesh: Mesh, rules=None) -> PartitionSpec:
    """PartitionSpec for a parameter with logical `axes`, sharding only divisible dims."""
    table = dict(rules or DEFAULT_RULES)
    spec, taken = [], set()
    for name, dim in zip(axes, shape):
        mesh_axis = table.get(name)
        size = mesh.shape[mesh_axis] if mesh_axis in mesh.shape else 1
        if mesh_axis is None or mesh_axis in taken or size == 1 or dim % size:
            spec.append(None)
        else:
            spec.append(mesh_axis)
            taken.add(mesh_axis)
    return PartitionSpec(*spec)


def logical_sharding(axes, shape, mesh: Mesh, rules=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


def initialize_distributed_from_env() -> bool:
    """Start jax.distributed when a launcher asked for it through the environment.

    JAXUNLEARN_DISTRIBUTED=auto: `jax.distributed.initialize()` discovers everything itself
    (TPU pods, SLURM). Otherwise JAXUNLEARN_COORDINATOR, JAXUNLEARN_NUM_PROCESSES and
    JAXUNLEARN_PROCESS_ID name the coordinator, process count and this process.
    """
    if jax.distributed.is_initialized() if hasattr(jax.distributed, "is_initialized") else False:
        return True
    if os.environ.get("JAXUNLEARN_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
        return True
    coordinator = os.environ.get("JAXUNLEARN_COORDINATOR")
    if not coordinator:
        return False
    if os.environ.get("JAXUNLEARN_CPU_COLLECTIVES"):
        jax.config.update("jax_cpu_collectives_implementation", os.environ["JAXUNLEARN_CPU_COLLECTIVES"])
    jax.distributed.initialize(
        coordinator,
        num_processes=int(os.environ["JAXUNLEARN_NUM_PROCESSES"]),
        process_id=int(os.environ["JAXUNLEARN_PROCESS_ID"]),
    )
    return True


def constrain_batch(x: jax.Array) -> jax.Array:
    """Keep activations [B, ...] split over the batch mesh axes (data, fsdp).

    Only inside `jax.set_mesh(mesh)` (the train step runs there); a no-op otherwise. Without
    it XLA may keep activations with the whole batch on every device when the weights are
    sharded on the same mesh axis along the contracted dimension (FSDP)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names and mesh.shape[a] > 1)
    ways = 1
    for a in axes:
        ways *= mesh.shape[a]
    if not axes or x.shape[0] % ways:
        return x
    spec = jax.sharding.PartitionSpec(axes, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, spec)


@dataclasses.dataclass
class MeshSection:
    data: int = setting(-1, "data-parallel axis size (-1: the devices left over)")
    fsdp: int = setting(1, "fully sharded data-parallel axis size (parameters and optimizer state sharded)")
    tensor: int = setting(1, "tensor-parallel axis size")
