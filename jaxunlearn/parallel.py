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
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

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


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None, dcn_data: int = 1) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices; one axis may be -1 (the rest).

    Devices are laid out by the platform's topology (jax.make_mesh: neighbouring chips on
    the axes that talk most), axis types Auto. On a multi-slice TPU pod (devices with
    several `slice_index` values), or with dcn_data > 1, the mesh is hybrid: the data axis
    spans the slices over the data-centre network (DCN), dcn_data ways (default: one way
    per slice), while fsdp and tensor stay inside a slice on the chip interconnect (ICI),
    where the per-layer weight gathers and reductions run. Without slices (GPU hosts),
    dcn_data > 1 treats each process as a slice."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = _axis_sizes([data, fsdp, tensor], len(devices))
    slices = sorted({getattr(d, "slice_index", 0) for d in devices})
    if dcn_data == 1 and len(slices) > 1:
        dcn_data = len(slices)
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if dcn_data > 1:
        return Mesh(hybrid_device_grid(sizes, dcn_data, devices), MESH_AXES, axis_types=axis_types)
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=axis_types, devices=devices)


def hybrid_device_grid(sizes, dcn_data: int, devices) -> np.ndarray:
    """Devices [data, fsdp, tensor] with the data axis split dcn_data ways across slices (or
    processes when the devices carry no slice index) and the rest within one."""
    if dcn_data < 1 or sizes[0] % dcn_data:
        raise ConfigError(
            f"mesh.dcn_data={dcn_data} must divide the data axis ({sizes[0]}); the data axis spans the slices, "
            "fsdp and tensor stay inside one"
        )
    by_slice = any(hasattr(d, "slice_index") for d in devices)
    granules = {getattr(d, "slice_index" if by_slice else "process_index", 0) for d in devices}
    if len(granules) != dcn_data:
        unit = "slices" if by_slice else "processes"
        raise ConfigError(
            f"mesh.dcn_data={dcn_data}, but the devices form {len(granules)} {unit}; set mesh.dcn_data to "
            f"{len(granules)} (or 1 for a single-slice mesh)"
        )
    ici = (sizes[0] // dcn_data, sizes[1], sizes[2])
    return mesh_utils.create_hybrid_device_mesh(
        ici, (dcn_data, 1, 1), devices, process_is_granule=not by_slice, allow_split_physical_axes=True
    )


def _axis_sizes(sizes: list[int], n_devices: int) -> list[int]:
    if sizes.count(-1) > 1:
        raise ConfigError("at most one mesh axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise ConfigError(f"{n_devices} devices cannot be split into mesh axes {sizes}")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise ConfigError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} devices, "
            f"but {n_devices} are available"
        )
    return sizes


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
    axes = batch_mesh_axes(x.shape[0])
    if not axes:
        return x
    spec = jax.sharding.PartitionSpec(axes, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, spec)


def batch_mesh_axes(rows: int) -> tuple[str, ...]:
    """The mesh axes (data, fsdp) that split `rows` batch rows inside `jax.set_mesh(mesh)`;
    () outside a mesh, on one device, or when they do not divide the rows."""
    mesh = jax.sharding.get_abstract_mesh()
    return () if mesh.empty else batch_axes(mesh, rows)


def batch_mesh_ways(rows: int) -> int:
    """Into how many parts `rows` batch rows are split inside `jax.set_mesh(mesh)` (1 outside)."""
    return batch_ways(jax.sharding.get_abstract_mesh(), batch_mesh_axes(rows))


def batch_axes(mesh, rows: int | None = None) -> tuple[str, ...]:
    """The axes of `mesh` (data, fsdp) a batch is split over: those longer than 1, () when
    their product does not divide `rows` (then every device gets the whole batch)."""
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names and mesh.shape[a] > 1)
    if not axes or (rows is not None and rows % batch_ways(mesh, axes)):
        return ()
    return axes


def batch_ways(mesh, axes: tuple[str, ...] | None = None) -> int:
    """Into how many parts a batch is split on `mesh` (1 without one)."""
    if mesh is None:
        return 1
    return math.prod(mesh.shape[a] for a in (batch_axes(mesh) if axes is None else axes))


def place_rows(array, mesh):
    """A host batch [rows, ...] split over the mesh's batch axes (data, fsdp), or on the
    default device without a mesh. With several processes every one passes the same whole
    batch and each places its own devices' rows."""
    if mesh is None:
        return jax.numpy.asarray(array)
    return jax.device_put(array, NamedSharding(mesh, PartitionSpec(batch_axes(mesh, len(array)) or None)))


def params_mesh(tree) -> Mesh | None:
    """The mesh that the arrays of `tree` are laid out on, when it has several devices
    (evaluation then puts its batches there, split over the batch axes); else None."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if isinstance(mesh, Mesh) and mesh.size > 1:
            return mesh
    return None


def host_get(tree):
    """`tree`'s arrays as numpy on this host: jax.device_get when this process holds them
    whole, else gathered from every process (a collective: every process must call it)."""
    if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


@dataclasses.dataclass
class MeshSection:
    data: int = setting(-1, "data-parallel axis size (-1: the devices left over)")
    fsdp: int = setting(1, "fully sharded data-parallel axis size (parameters and optimizer state sharded)")
    tensor: int = setting(1, "tensor-parallel axis size")
    dcn_data: int = setting(
        1,
        "ways the data axis spans slices over the data-centre network (multi-slice TPU pods; on GPU hosts: "
        "processes); 1: automatic (one way per TPU slice when there are several)",
    )

    def build(self, devices=None) -> Mesh:
        return make_mesh(self.data, self.fsdp, self.tensor, devices, self.dcn_data)
