"""The node's devices as NVIDIA's DRA driver names and describes them, so `gpu.nvidia.com` claims select them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kgpu.dra.devices import ConsumableShares, build_devices, quantity, rfc1123, semver
from kgpu.dra.slices import build_slices
from kgpu.errors import ConfigError
from kgpu.gpu import open_backend
from kgpu.host.pci import pcie_root


def inventory(name: str):  # type: ignore[no-untyped-def]
    return open_backend(simulate=name).inventory()


def test_an_h100_is_published_with_nvidias_attributes_and_a_shareable_memory_capacity() -> None:
    # Given the 8x H100 node, whose GPU 0 hangs below PCIe root pci0000:17
    devices = build_devices(inventory("h100x8"), {"0000:18:00.0": "pci0000:17"}, ConsumableShares.parse("memory"))
    # then gpu-0 reads exactly as NVIDIA's gpu-kubelet-plugin publishes it (deviceinfo.go, consumable_shares.go)
    assert devices[0].to_json() == {
        "name": "gpu-0",
        "allowMultipleAllocations": True,
        "attributes": {
            "architecture": {"string": "Hopper"},
            "brand": {"string": "Nvidia"},
            "cudaComputeCapability": {"version": "9.0.0"},
            "cudaDriverVersion": {"version": "13.0.0"},
            "driverVersion": {"version": "580.95.5"},
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "resource.kubernetes.io/numaNode": {"int": 0},
            "resource.kubernetes.io/pciBusID": {"string": "0000:18:00.0"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:17"},
            "type": {"string": "gpu"},
            "uuid": {"string": "GPU-04af0a9b-6df0-595a-bd74-7498840294e2"},
        },
        "capacity": {
            "memory": {
                "value": "81559Mi",
                "requestPolicy": {"default": "81559Mi", "validRange": {"min": "1Mi", "max": "81559Mi", "step": "1Mi"}},
            },
        },
    }
    assert [d.name for d in devices] == [f"gpu-{i}" for i in range(8)]
    assert "resource.kubernetes.io/pcieRoot" not in devices[1].attributes  # sysfs did not say: left out


@pytest.mark.parametrize(("mode", "default", "minimum", "shares"), [
    ("unlimited", "0", "0", None),
    ("4", "0", "0", {"value": "4", "requestPolicy": {"default": "1", "validRange": {"min": "1", "max": "4",
                                                                                    "step": "1"}}}),
])
def test_the_other_share_modes_follow_nvidias_request_policies(mode: str, default: str, minimum: str,
                                                               shares: object) -> None:
    [device] = build_devices(inventory("t4"), {}, ConsumableShares.parse(mode))
    assert device.capacity["memory"]["requestPolicy"] == {
        "default": default, "validRange": {"min": minimum, "max": "15Gi", "step": "1Mi"}}
    assert device.capacity.get("shares") == shares


def test_without_shares_or_mps_a_gpu_is_published_whole() -> None:
    # disabled: plain devices; a P100 (compute capability 6.0) has no MPS limits, so kgpu never shares it
    [t4] = build_devices(inventory("t4"), {}, ConsumableShares.parse("disabled"))
    [p100] = build_devices(inventory("p100"), {}, ConsumableShares.parse("memory"))
    for device in (t4, p100):
        assert not device.shareable and "allowMultipleAllocations" not in device.to_json()
        assert set(device.capacity["memory"]) == {"value"}
    assert t4.attributes["brand"] == {"string": "Tesla"} and t4.attributes["architecture"] == {"string": "Turing"}
    assert t4.attributes["driverVersion"] == {"version": "570.172.8"}


def test_a_gpu_in_mig_mode_is_published_as_its_mig_devices_with_nvidias_names_and_capacities() -> None:
    devices = {d.name: d for d in build_devices(inventory("a100-mig"), {}, ConsumableShares.parse("memory"))}
    assert sorted(devices) == ["gpu-0-mig-1g10gb-19-2", "gpu-0-mig-1g10gb-19-3", "gpu-0-mig-2g20gb-14-0",
                               "gpu-0-mig-3g40gb-9-4", "gpu-1"]
    mig = devices["gpu-0-mig-3g40gb-9-4"]
    assert mig.attributes["type"] == {"string": "mig"}
    assert mig.attributes["profile"] == {"string": "3g.40gb"}
    assert mig.attributes["parentUUID"] == {"string": "GPU-374202be-4ba9-56b5-bd01-03f77bd5589f"}
    assert mig.attributes["uuid"] == {"string": "MIG-51ae983c-d1ea-5513-88c1-a818a9ff928a"}
    assert mig.attributes["productName"] == {"string": "NVIDIA A100-SXM4-80GB"}
    assert {k: v["value"] for k, v in mig.capacity.items()} == {
        "multiprocessors": "42", "copyEngines": "3", "decoders": "2", "encoders": "0", "jpegEngines": "0",
        "ofaEngines": "0", "memory": "40192Mi",
        "memorySlice4": "1", "memorySlice5": "1", "memorySlice6": "1", "memorySlice7": "1",
    }
    assert not mig.shareable
    assert mig.health_uuids == ("MIG-51ae983c-d1ea-5513-88c1-a818a9ff928a", "GPU-374202be-4ba9-56b5-bd01-03f77bd5589f")


def test_only_the_gpus_the_driver_was_given_are_published() -> None:
    inv = inventory("h100x8")
    mine = frozenset({inv.gpus[4].uuid, inv.gpus[5].uuid})
    assert [d.name for d in build_devices(inv, {}, gpus=mine)] == ["gpu-4", "gpu-5"]


def test_versions_quantities_and_names_are_spelled_as_kubernetes_and_nvidia_spell_them() -> None:
    assert [semver(v) for v in ("9.0", "13.0", "580.95.05", "535.104.05", "7")] == [
        "9.0.0", "13.0.0", "580.95.5", "535.104.5", "7.0.0"]
    assert [quantity(n) for n in (81559 * 2**20, 80 * 2**30, 1, 0, 1536)] == ["81559Mi", "80Gi", "1", "0", "1536"]
    assert rfc1123("1g10gb+me") == "1g10gb-me"
    with pytest.raises(ConfigError, match="--consumable-shares='half': allowed disabled, memory, unlimited"):
        ConsumableShares.parse("half")


def test_the_pcie_root_is_read_from_sysfs_as_kubernetes_reads_it(tmp_path: Path) -> None:
    devices = tmp_path / "sys/bus/pci/devices"
    devices.mkdir(parents=True)
    os.symlink("../../../devices/pci0000:17/0000:17:01.0/0000:18:00.0", devices / "0000:18:00.0")
    os.symlink("../../../devices/platform/something/0000:19:00.0", devices / "0000:19:00.0")
    assert pcie_root(tmp_path, "0000:18:00.0") == "pci0000:17"
    assert pcie_root(tmp_path, "0000:19:00.0") is None  # not below a PCIe root
    assert pcie_root(tmp_path, "0000:20:00.0") is None  # no such device


def test_a_slice_leaves_unhealthy_devices_out_or_taints_them() -> None:
    devices = build_devices(inventory("h100x8"), {})
    taint = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
    [removed] = build_slices("n1", "gpu.nvidia.com", devices, {"gpu-2": taint}, generation=7,
                             owner={"name": "n1", "uid": "u1"})
    assert [d["name"] for d in removed["spec"]["devices"]] == ["gpu-0", "gpu-1", "gpu-3", "gpu-4", "gpu-5", "gpu-6",
                                                               "gpu-7"]
    assert removed["metadata"] == {"name": "n1-gpu.nvidia.com", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u1", "controller": True}]}
    assert removed["spec"]["nodeName"] == "n1" and removed["spec"]["driver"] == "gpu.nvidia.com"
    assert removed["spec"]["pool"] == {"name": "n1", "generation": 7, "resourceSliceCount": 1}
    [tainted] = build_slices("n1", "gpu.nvidia.com", devices, {"gpu-2": taint}, generation=7, mode="taint")
    assert tainted["spec"]["devices"][2]["taints"] == taint


def test_more_devices_than_a_slice_holds_are_split_over_slices_of_one_pool() -> None:
    devices = build_devices(inventory("h100x8"), {}) * 20  # 160 devices
    slices = build_slices("n1", "gpu.nvidia.com", devices, {}, generation=1)
    assert [len(s["spec"]["devices"]) for s in slices] == [128, 32]
    assert [s["metadata"]["name"] for s in slices] == ["n1-gpu.nvidia.com-0", "n1-gpu.nvidia.com-1"]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {2}


@pytest.mark.parametrize(("fixture", "mode"), [("h100x8", "memory"), ("a100-mig", "4"), ("t4", "unlimited")])
def test_published_slices_are_valid_resource_k8s_io_v1_of_kubernetes_1_36(fixture: str, mode: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    devices = build_devices(inventory(fixture), {}, ConsumableShares.parse(mode))
    taints = {devices[0].name: [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]}
    for obj in build_slices("node-1", "gpu.nvidia.com", devices, taints, generation=3, mode="taint",
                            owner={"name": "node-1", "uid": "0d3b5e6a-0000-4000-8000-000000000001"}):
        kubernetes_validate.validate(obj, "1.36", strict=True)
