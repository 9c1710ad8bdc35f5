"""Given a node and a config, which resources and device IDs does the plugin advertise to the kubelet?"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from dp_helpers import EMPTY_HOST, build_logic, node
from dp_helpers import plugin_config as config

from kgpu.config.values import PluginConfig, mig_resource_name
from kgpu.deviceplugin.devices import AdvertisedResource, parse_mig_minors, socket_name
from kgpu.deviceplugin.resources import NodeResources
from kgpu.deviceplugin.service import DevicePluginLogic
from kgpu.errors import ConfigError
from kgpu.gpu import nvml as nvml_backend
from kgpu.gpu.model import Inventory

FIXTURES = ("p100", "t4", "a30", "a100-mig", "h100x8", "mixed")


def advertised(inv: Inventory, cfg: PluginConfig, host: Path = EMPTY_HOST) -> dict[str, AdvertisedResource]:
    return {r.name: r for r in build_logic(inv, cfg, host).resources()}


# --- whole GPUs and MIG strategies, for every built-in node -----------------------------------------


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("strategy", ["none", "single", "mixed"])
def test_every_node_and_mig_strategy(fixture: str, strategy: str) -> None:
    inv = node(fixture)
    if fixture == "a100-mig" and strategy == "single":
        with pytest.raises(ConfigError, match="same profile"):
            build_logic(inv, config(mig_strategy=strategy), EMPTY_HOST)
        return
    logic = build_logic(inv, config(mig_strategy=strategy), EMPTY_HOST)
    resources = {r.name: r for r in logic.resources()}
    whole = [g for g in inv.gpus if not g.mig_enabled]
    # Whole GPUs: every GPU not in MIG mode, by UUID, in index order, with its socket named as NVIDIA does.
    gpu = resources["nvidia.com/gpu"]
    assert gpu.socket_name == "nvidia-gpu.sock"
    assert [d.id for d in gpu.devices] == [g.uuid for g in whole]
    assert [d.numa_node for d in gpu.devices] == [g.numa_node for g in whole]
    assert all(d.health_uuids == (d.id,) and d.gpu_uuid == d.id and d.replica is None for d in gpu.devices)
    assert not gpu.shared
    if fixture == "a100-mig" and strategy == "mixed":
        assert sorted(resources) == [
            "nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb"
        ]
    else:
        assert list(resources) == ["nvidia.com/gpu"]
    assert isinstance(logic, NodeResources)
    _: DevicePluginLogic = logic  # the server's Protocol


def test_mig_mode_gpu_is_not_advertised_whole_under_strategy_none() -> None:
    inv = node("a100-mig")
    logic = build_logic(inv, config(mig_strategy="none"), EMPTY_HOST)
    (gpu,) = logic.resources()
    assert [d.id for d in gpu.devices] == [inv.gpus[1].uuid]
    assert any("GPU 0" in w and "MIG mode" in w and "mixed" in w for w in logic.warnings)


def test_mixed_strategy_advertises_each_mig_profile_with_its_devices() -> None:
    inv = node("a100-mig")
    resources = advertised(inv, config(mig_strategy="mixed"))
    small = resources["nvidia.com/mig-1g.10gb"]
    assert small.socket_name == "nvidia-mig-1g.10gb.sock"
    migs = [m for m in inv.gpus[0].mig_devices if m.profile == "1g.10gb"]
    assert [d.id for d in small.devices] == [m.uuid for m in migs]
    parent = inv.gpus[0].uuid
    assert all(d.health_uuids == (d.id, parent) and d.gpu_uuid == parent for d in small.devices)
    assert [d.id for d in resources["nvidia.com/mig-3g.40gb"].devices] == [inv.gpus[0].mig_devices[0].uuid]


def test_single_strategy_advertises_uniform_mig_devices_as_nvidia_com_gpu(tmp_path: Path) -> None:
    fixture = tmp_path / "a100x1-7.yaml"
    migs = "\n".join(
        f"  - {{uuid: MIG-00000000-0000-0000-0000-00000000000{i}, profile: 1g.10gb, gpu_instance_id: {7 + i}, "
        f"memory_total_mib: 9728, multiprocessor_count: 14}}"
        for i in range(3)
    )
    fixture.write_text(f"""
driver_version: 580.95.05
cuda_driver_version: '13.0'
gpus:
- index: 0
  uuid: GPU-11111111-2222-3333-4444-555555555555
  name: NVIDIA A100-SXM4-80GB
  compute_capability: '8.0'
  memory_total_mib: 81920
  pci_bus_id: '00000000:07:00.0'
  pci_device_id: 0x20b210de
  numa_node: 1
  multiprocessor_count: 108
  mig_capable: true
  mig_enabled: true
  mig_devices:
{migs}
""")
    inv = node(str(fixture))
    (gpu,) = build_logic(inv, config(mig_strategy="single"), EMPTY_HOST).resources()
    assert gpu.name == "nvidia.com/gpu"
    assert [d.id for d in gpu.devices] == [f"MIG-00000000-0000-0000-0000-00000000000{i}" for i in range(3)]
    assert {d.numa_node for d in gpu.devices} == {1}


def test_single_strategy_refuses_differing_profiles_naming_them() -> None:
    with pytest.raises(ConfigError) as exc:
        build_logic(node("a100-mig"), config(mig_strategy="single"), EMPTY_HOST)
    message = str(exc.value)
    assert "3g.40gb" in message and "1g.10gb" in message and "--mig-strategy mixed" in message


def test_mig_resource_and_socket_names_follow_nvidia() -> None:
    assert mig_resource_name("1g.10gb") == "nvidia.com/mig-1g.10gb"
    assert mig_resource_name("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"
    assert socket_name("nvidia.com/gpu.shared") == "nvidia-gpu.shared.sock"


# --- renaming with resources.gpus / resources.mig ---------------------------------------------------


def test_gpu_patterns_rename_by_product_name_first_match_wins(tmp_path: Path) -> None:
    inv = node("mixed")  # a Tesla T4 and an NVIDIA A30
    cfg = config(tmp_path, """
resources:
  gpus:
  - {pattern: "*T4*", name: t4}
  - {pattern: "*", name: big}
""")
    resources = advertised(inv, cfg)
    assert [d.id for d in resources["nvidia.com/t4"].devices] == [inv.gpus[0].uuid]
    assert [d.id for d in resources["nvidia.com/big"].devices] == [inv.gpus[1].uuid]
    assert resources["nvidia.com/t4"].socket_name == "nvidia-t4.sock"


def test_gpus_no_pattern_matches_fall_back_to_nvidia_com_gpu(tmp_path: Path) -> None:
    inv = node("mixed")
    resources = advertised(inv, config(tmp_path, "resources: {gpus: [{pattern: 'NVIDIA A30', name: a30}]}"))
    assert [d.id for d in resources["nvidia.com/gpu"].devices] == [inv.gpus[0].uuid]
    assert [d.id for d in resources["nvidia.com/a30"].devices] == [inv.gpus[1].uuid]


def test_mig_patterns_rename_profiles_under_mixed(tmp_path: Path) -> None:
    cfg = config(tmp_path, "flags: {migStrategy: mixed}\nresources: {mig: [{pattern: '1g.10gb', name: mig-small}]}")
    resources = advertised(node("a100-mig"), cfg)
    assert len(resources["nvidia.com/mig-small"].devices) == 2
    assert "nvidia.com/mig-1g.10gb" not in resources
    assert "nvidia.com/mig-2g.20gb" in resources


# --- time-slicing ---------------------------------------------------------------------------------


def test_time_slicing_replicates_every_gpu_keeping_the_name(tmp_path: Path) -> None:
    inv = node("h100x8")
    cfg = config(tmp_path, "sharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}")
    (gpu,) = build_logic(inv, cfg, EMPTY_HOST).resources()
    assert gpu.name == "nvidia.com/gpu" and gpu.shared
    assert len(gpu.devices) == 32
    assert [d.id for d in gpu.devices[:5]] == [f"{inv.gpus[0].uuid}::{n}" for n in range(4)] + [
        f"{inv.gpus[1].uuid}::0"
    ]
    assert [d.replica for d in gpu.devices[:4]] == [0, 1, 2, 3]
    assert all(d.id.split("::")[0] == d.gpu_uuid and d.health_uuids == (d.gpu_uuid,) for d in gpu.devices)
    assert gpu.fail_requests_greater_than_one is False


def test_rename_by_default_advertises_gpu_shared_and_keeps_the_flag(tmp_path: Path) -> None:
    inv = node("t4")
    cfg = config(tmp_path, """
sharing:
  timeSlicing:
    renameByDefault: true
    failRequestsGreaterThanOne: true
    resources: [{name: gpu, replicas: 10}]
""")
    resources = advertised(inv, cfg)
    assert list(resources) == ["nvidia.com/gpu.shared"]
    shared = resources["nvidia.com/gpu.shared"]
    assert shared.socket_name == "nvidia-gpu.shared.sock"
    assert [d.id for d in shared.devices] == [f"{inv.gpus[0].uuid}::{n}" for n in range(10)]
    assert shared.shared and shared.fail_requests_greater_than_one


def test_per_gpu_replica_counts_on_one_node(tmp_path: Path) -> None:
    """Beyond NVIDIA (their #1786): different replica counts for different GPUs of one node."""
    inv = node("h100x8")
    cfg = config(tmp_path, f"""
sharing:
  timeSlicing:
    resources:
    - {{name: gpu, replicas: 4, devices: [0, 1]}}
    - {{name: gpu, replicas: 2, devices: ["{inv.gpus[2].uuid}"]}}
""")
    (gpu,) = build_logic(inv, cfg, EMPTY_HOST).resources()
    per_gpu: dict[str, int] = {}
    for d in gpu.devices:
        per_gpu[d.gpu_uuid] = per_gpu.get(d.gpu_uuid, 0) + 1
    assert [per_gpu[g.uuid] for g in inv.gpus] == [4, 4, 2, 1, 1, 1, 1, 1]
    # GPUs 3..7 stay whole (plain UUID IDs) in the same resource, as NVIDIA does without a rename.
    assert [d.id for d in gpu.devices if d.replica is None] == [g.uuid for g in inv.gpus[3:]]


def test_shared_gpus_can_be_split_off_under_another_name(tmp_path: Path) -> None:
    inv = node("h100x8")
    cfg = config(tmp_path, """
sharing:
  timeSlicing:
    resources:
    - {name: gpu, replicas: 8, devices: 2, rename: gpu-shared-small}
""")
    resources = advertised(inv, cfg)
    assert [d.id for d in resources["nvidia.com/gpu"].devices] == [g.uuid for g in inv.gpus[2:]]
    small = resources["nvidia.com/gpu-shared-small"]
    assert len(small.devices) == 16 and {d.gpu_uuid for d in small.devices} == {inv.gpus[0].uuid, inv.gpus[1].uuid}


def test_time_slicing_a_mig_profile_by_mig_index(tmp_path: Path) -> None:
    inv = node("a100-mig")
    cfg = config(tmp_path, """
flags: {migStrategy: mixed}
sharing:
  timeSlicing:
    renameByDefault: true
    resources: [{name: mig-1g.10gb, replicas: 3, devices: ["0:3"]}]
""")
    resources = advertised(inv, cfg)
    mig = inv.gpus[0].mig_devices[3]
    shared = resources["nvidia.com/mig-1g.10gb.shared"].devices
    assert [d.id for d in shared] == [f"{mig.uuid}::{n}" for n in range(3)]
    assert [d.id for d in resources["nvidia.com/mig-1g.10gb"].devices] == [inv.gpus[0].mig_devices[2].uuid]
    assert all(d.health_uuids == (mig.uuid, inv.gpus[0].uuid) for d in shared)


def test_time_slicing_a_resource_the_node_lacks_is_skipped(tmp_path: Path) -> None:
    cfg = config(tmp_path, "sharing: {timeSlicing: {resources: [{name: mig-1g.10gb, replicas: 2}]}}")
    assert list(advertised(node("t4"), cfg)) == ["nvidia.com/gpu"]


@pytest.mark.parametrize(
    ("devices", "expected"),
    [("[5]", ["sharing.timeSlicing.resources[0].devices", "'5'", "0 (GPU-"]), ("3", ["share 3", "only 1"])],
)
def test_devices_that_are_not_on_this_node_are_errors(tmp_path: Path, devices: str, expected: list[str]) -> None:
    cfg = config(tmp_path, f"sharing: {{timeSlicing: {{resources: [{{name: gpu, replicas: 2, devices: {devices}}}]}}}}")
    with pytest.raises(ConfigError) as exc:
        build_logic(node("t4"), cfg, EMPTY_HOST)
    for part in expected:
        assert part in str(exc.value)


# --- NUMA nodes and MIG capability device nodes from the host ---------------------------------------


def test_numa_node_comes_from_the_inventory(tmp_path: Path) -> None:
    # Given an inventory whose T4 sits on NUMA node 3 and whose A30 has no affinity (sysfs -1, as on a VM)
    inv = node("mixed")
    t4, a30 = inv.gpus
    inv = dataclasses.replace(inv, gpus=(dataclasses.replace(t4, numa_node=3),
                                         dataclasses.replace(a30, numa_node=None)))
    # Then the kubelet's topology says exactly that, with no read of the host's sysfs of its own
    (gpu,) = build_logic(inv, config(), tmp_path).resources()
    assert [d.numa_node for d in gpu.devices] == [3, None]
    assert nvml_backend.read_numa_node("0000:3b:00.0", tmp_path) is None  # absent
    (tmp_path / "sys/bus/pci/devices/0000:3b:00.0").mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices/0000:3b:00.0/numa_node").write_text("-1\n")
    assert nvml_backend.read_numa_node("0000:3b:00.0", tmp_path) is None  # no affinity: no topology


def test_numa_node_falls_back_to_the_inventory_without_sysfs() -> None:
    (gpu,) = build_logic(node("mixed"), config(), EMPTY_HOST).resources()
    assert [d.numa_node for d in gpu.devices] == [0, 1]


def test_mig_minors_are_parsed_like_nvidias_plugin() -> None:
    text = "config 1\nmonitor 2\ngpu0/gi1/access 3\ngpu0/gi1/ci0/access 4\ngpu1/gi13/ci2/access 130\n"
    assert parse_mig_minors(text) == {(0, 1, None): 3, (0, 1, 0): 4, (1, 13, 2): 130}


def test_mig_devices_carry_their_capability_device_nodes(tmp_path: Path) -> None:
    inv = node("a100-mig")
    caps = tmp_path / "proc/driver/nvidia-caps"
    caps.mkdir(parents=True)
    lines = ["config 1", "monitor 2"]
    for mig in inv.gpus[0].mig_devices:
        lines.append(f"gpu0/gi{mig.gpu_instance_id}/access {10 * mig.gpu_instance_id}")
        lines.append(f"gpu0/gi{mig.gpu_instance_id}/ci{mig.compute_instance_id}/access {10 * mig.gpu_instance_id + 1}")
    (caps / "mig-minors").write_text("\n".join(lines) + "\n")
    logic = build_logic(inv, config(mig_strategy="mixed"), tmp_path)
    big = logic.resource_sets["nvidia.com/mig-3g.40gb"].grants[0].device
    assert big.device_nodes == ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap20", "/dev/nvidia-caps/nvidia-cap21")
    assert big.index == "0:0"
    assert logic.resource_sets["nvidia.com/gpu"].grants[0].device.device_nodes == ("/dev/nvidia1",)
