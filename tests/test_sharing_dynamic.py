"""Dynamically shared GPUs on a node: which GPUs, their share IDs, and what a container gets for its share."""

from __future__ import annotations

import pytest
from dp_helpers import node

from kgpu.config import DeviceSelector, DynamicShares
from kgpu.errors import ConfigError
from kgpu.scheduler.assignment import Share
from kgpu.sharing.dynamic import ShareError, dynamic_gpus, preferred_shares, published, share_grant
from kgpu.sharing.paths import MpsPaths


def test_selected_gpus_get_their_share_ids_and_are_published_for_the_extender() -> None:
    gpus = dynamic_gpus(node("h100x8"), DynamicShares(DeviceSelector(refs=("0", "3")), 4), "c.yaml")
    assert [g.index for g in gpus] == [0, 3]
    assert gpus[0].share_ids() == tuple(f"{gpus[0].uuid}::{n}" for n in range(4))
    (first, second) = published(gpus, healthy=lambda uuid: uuid != gpus[1].uuid)
    assert (first.memory_mib, first.shares, first.type, first.healthy) == (81559, 4, "NVIDIA H100 80GB HBM3", True)
    assert not second.healthy


@pytest.mark.parametrize(("fixture", "devices", "shares", "fragment"), [
    ("h100x8", DeviceSelector(all=True), 49, "shares: 49: allowed 1 to 48"),
    ("a100-mig", DeviceSelector(all=True), 4, "has MIG enabled"),
    ("p100", DeviceSelector(all=True), 4, "need Volta"),
    ("t4", DeviceSelector(refs=("3",)), 4, "'3' is not a GPU of this node"),
])
def test_gpus_that_cannot_be_shared_are_refused_in_one_line(fixture: str, devices: DeviceSelector, shares: int,
                                                           fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: sharing\.mps\.dynamic") as info:
        dynamic_gpus(node(fixture), DynamicShares(devices, shares), "c.yaml")
    assert fragment in str(info.value)


def test_one_share_is_an_mps_client_with_exactly_its_limits() -> None:
    gpus = {g.uuid: g for g in dynamic_gpus(node("h100x8"), DynamicShares(DeviceSelector(all=True), 10), "c")}
    uuid = next(iter(gpus))
    grant = share_grant([Share(uuid, 30720, 25)], gpus, MpsPaths())
    assert grant.gpu_uuids == (uuid,)
    assert grant.envs == {"CUDA_MPS_PIPE_DIRECTORY": f"/run/kgpu/mps/{uuid}/pipe",
                          "CUDA_MPS_LOG_DIRECTORY": f"/run/kgpu/mps/{uuid}/log",
                          "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=30720M", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25"}
    assert {m.container_path for m in grant.mounts} == {f"/run/kgpu/mps/{uuid}/pipe", f"/run/kgpu/mps/{uuid}/log",
                                                        "/dev/shm"}
    # no guaranteed SMs, or all of them: no thread cap
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in share_grant([Share(uuid, 1000, 0)], gpus, MpsPaths()).envs
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in share_grant([Share(uuid, 81559, 100)], gpus, MpsPaths()).envs


def test_several_gpus_are_whole_and_unknown_gpus_refused() -> None:
    gpus = {g.uuid: g for g in dynamic_gpus(node("h100x8"), DynamicShares(DeviceSelector(all=True), 10), "c")}
    a, b = list(gpus)[:2]
    grant = share_grant([Share(a, 81559, 100), Share(b, 81559, 100)], gpus, MpsPaths())
    assert grant.gpu_uuids == (a, b) and not grant.envs
    with pytest.raises(ShareError, match="GPU-elsewhere, which this node does not share dynamically"):
        share_grant([Share("GPU-elsewhere", 1, 1)], gpus, MpsPaths())


def test_preferred_ids_name_the_gpu_the_pod_was_given() -> None:
    available = ["GPU-a::0", "GPU-a::1", "GPU-b::0", "GPU-b::1"]
    assert preferred_shares(available, [], 1, ["GPU-b"]) == ["GPU-b::0"]
    assert preferred_shares(available, [], 2, ["GPU-a", "GPU-b"]) == ["GPU-a::0", "GPU-b::0"]
    assert preferred_shares(["GPU-a::1"], [], 1, ["GPU-b"]) == ["GPU-a::1"]  # nothing free there: any ID
