"""Meshes for real topologies: jax.make_mesh with Auto axes, and the hybrid ICI/DCN grid of
a multi-slice pod (data across slices, fsdp and tensor inside one)."""

from __future__ import annotations

import dataclasses

import jax
import pytest
from jax.sharding import AxisType

from jaxunlearn.errors import ConfigError
from jaxunlearn.parallel import MESH_AXES, MeshSection, hybrid_device_grid, make_mesh


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    id: int
    slice_index: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "fake"


def _pod(slices: int, per_slice: int):
    return [FakeDevice(s * per_slice + i, s, s) for s in range(slices) for i in range(per_slice)]


def test_the_mesh_has_auto_axes_and_the_configured_shape():
    mesh = MeshSection().build()
    assert mesh.axis_names == MESH_AXES
    assert mesh.axis_types == (AxisType.Auto,) * 3
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}


def test_hybrid_grid_puts_the_data_axis_across_slices():
    devices = _pod(slices=2, per_slice=4)
    grid = hybrid_device_grid([4, 2, 1], 2, devices)  # data 4 = 2 slices x 2, fsdp 2 in a slice
    assert grid.shape == (4, 2, 1)
    slice_of = [[d.slice_index for d in row.flat] for row in grid]
    assert slice_of == [[0, 0], [0, 0], [1, 1], [1, 1]]  # an fsdp group never straddles slices


def test_hybrid_grid_errors_name_the_fix():
    devices = _pod(slices=2, per_slice=4)
    with pytest.raises(ConfigError, match="the devices form 2 slices; set mesh.dcn_data to 2"):
        hybrid_device_grid([8, 1, 1], 4, devices)
    with pytest.raises(ConfigError, match="must divide the data axis"):
        hybrid_device_grid([1, 8, 1], 2, devices)


def test_processes_are_the_granules_without_slices():
    """GPU hosts: no slice_index; mesh.dcn_data > 1 splits the data axis across processes."""

    @dataclasses.dataclass(frozen=True)
    class GpuLike:
        id: int
        process_index: int
        platform: str = "cpu"
        device_kind: str = "fake"

    devices = [GpuLike(p * 2 + i, p) for p in range(2) for i in range(2)]
    grid = hybrid_device_grid([2, 2, 1], 2, devices)
    assert [[d.process_index for d in row.flat] for row in grid] == [[0, 0], [1, 1]]


def test_bad_axis_sizes_are_refused():
    with pytest.raises(ConfigError, match="needs 3 devices"):
        make_mesh(data=3, fsdp=1, tensor=1, devices=[FakeDevice(0, 0, 0)])
