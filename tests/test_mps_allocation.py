"""When the kubelet allocates MPS slices, what does the container get?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kgpu.config.file import parse_mps_section
from kgpu.container import AllocationError
from kgpu.gpu.backend import open_backend
from kgpu.sharing import MpsLayout, MpsPaths, build_layout, slice_allocation

ROOT = MpsPaths(Path("/run/kgpu/mps"))


def h100_layout(**extra: Any) -> MpsLayout:
    backend = open_backend(simulate="h100x8")
    inventory = backend.inventory()
    backend.close()
    mps = {
        "slices": [
            {"name": "nvidia.com/gpu-20gb", "memory": "20Gi", "computePercent": 50, "count": 2, "devices": [0]},
            {"name": "nvidia.com/gpu-10gb", "memory": "10Gi", "computePercent": 25, "count": 2, "devices": [0, 1]},
        ],
        "allowComputeOversubscription": True,
        "failRequestsGreaterThanOne": False,  # NVIDIA's default for sharing.mps is true; these tests add slices up
        **extra,
    }
    return build_layout(inventory, parse_mps_section(mps, "config.yaml"))


def test_a_20gb_slice_gets_its_memory_and_sm_limits_and_the_daemon_of_its_gpu() -> None:
    layout = h100_layout()
    big = layout.slices_of("nvidia.com/gpu-20gb")[1]
    alloc = slice_allocation(layout, [big.id], ROOT, resource="nvidia.com/gpu-20gb")
    pipe = f"/run/kgpu/mps/{big.gpu_uuid}/pipe"
    assert alloc.envs == {
        "NVIDIA_VISIBLE_DEVICES": big.gpu_uuid,
        "CUDA_MPS_PIPE_DIRECTORY": pipe,
        "CUDA_MPS_LOG_DIRECTORY": f"/run/kgpu/mps/{big.gpu_uuid}/log",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=20480M",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
    }
    mounts = {m.container_path: (m.host_path, m.read_only) for m in alloc.mounts}
    assert mounts[pipe] == (pipe, False)
    assert mounts["/dev/shm"] == ("/run/kgpu/mps/shm", False)


def test_a_small_slice_on_the_second_gpu_talks_to_that_gpus_daemon() -> None:
    layout = h100_layout()
    small = next(s for s in layout.slices_of("nvidia.com/gpu-10gb") if s.gpu_index == 1)
    alloc = slice_allocation(layout, [small.id], ROOT)
    assert alloc.envs["CUDA_MPS_PIPE_DIRECTORY"] == f"/run/kgpu/mps/{small.gpu_uuid}/pipe"
    assert alloc.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=10240M"
    assert alloc.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == small.gpu_uuid


def test_two_slices_of_one_gpu_add_up() -> None:
    layout = h100_layout()
    pair = [s.id for s in layout.slices_of("nvidia.com/gpu-10gb") if s.gpu_index == 0]
    alloc = slice_allocation(layout, pair, ROOT)
    assert alloc.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M"
    assert alloc.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"


def test_slices_of_two_gpus_in_one_request_are_refused() -> None:
    layout = h100_layout()
    ids = [s.id for s in layout.slices_of("nvidia.com/gpu-10gb") if s.number == 0]
    with pytest.raises(AllocationError, match=r"spans 2 GPUs"):
        slice_allocation(layout, ids, ROOT)


def test_fail_requests_greater_than_one_refuses_two_slices() -> None:
    layout = h100_layout(failRequestsGreaterThanOne=True)
    assert parse_mps_section({"resources": [{"name": "gpu", "replicas": 2}]}).fail_requests_greater_than_one
    pair = [s.id for s in layout.slices_of("nvidia.com/gpu-10gb") if s.gpu_index == 0]
    with pytest.raises(AllocationError, match=r"failRequestsGreaterThanOne is true"):
        slice_allocation(layout, pair, ROOT)


@pytest.mark.parametrize("bad", ["GPU-04af0a9b-6df0-595a-bd74-7498840294e2::gpu-20gb-9", "nonsense", ""])
def test_unknown_ids_are_an_error_never_a_silent_allocation(bad: str) -> None:
    with pytest.raises(AllocationError, match=r"unknown MPS slice"):
        slice_allocation(h100_layout(), [bad], ROOT)


def test_an_id_of_another_resource_is_unknown_to_this_one() -> None:
    layout = h100_layout()
    small = layout.slices_of("nvidia.com/gpu-10gb")[0]
    with pytest.raises(AllocationError, match=r"of nvidia.com/gpu-20gb"):
        slice_allocation(layout, [small.id], ROOT, resource="nvidia.com/gpu-20gb")


def test_index_id_strategy_puts_the_index_in_nvidia_visible_devices() -> None:
    layout = h100_layout()
    alloc = slice_allocation(layout, [layout.slices[0].id], ROOT, visible_device="0")
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == "0"


def test_a_custom_mps_root_moves_every_path() -> None:
    layout = h100_layout()
    alloc = slice_allocation(layout, [layout.slices[0].id], MpsPaths(Path("/var/lib/kgpu/mps")))
    assert alloc.envs["CUDA_MPS_PIPE_DIRECTORY"].startswith("/var/lib/kgpu/mps/GPU-")
    assert {m.host_path for m in alloc.mounts} >= {"/var/lib/kgpu/mps/shm"}
