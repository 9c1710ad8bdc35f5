"""When the kubelet asks which devices to prefer, does the plugin pick linked, local, evenly used devices?"""

from __future__ import annotations

from pathlib import Path

import pytest
from dp_helpers import EMPTY_HOST, build_logic, node, plugin_config

from kgpu.container import AllocationError
from kgpu.deviceplugin.resources import NodeResources
from kgpu.gpu.model import Inventory


def logic_for(inv: Inventory, tmp_path: Path | None = None, text: str | None = None, **flags: object) -> NodeResources:
    return build_logic(inv, plugin_config(tmp_path, text, **flags), EMPTY_HOST)


H100 = node("h100x8")
UUIDS = [g.uuid for g in H100.gpus]


def indexes(ids: list[str]) -> list[int]:
    return [UUIDS.index(i.split("::")[0]) for i in ids]


# --- whole GPUs on the HGX H100 (NVSwitch full mesh: NUMA decides) -----------------------------------


def test_h100x8_four_gpus_come_from_one_numa_node() -> None:
    logic = logic_for(H100)
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", UUIDS, [], 4)) == [0, 1, 2, 3]


def test_h100x8_must_include_is_honoured_and_the_rest_shares_its_numa_node() -> None:
    logic = logic_for(H100)
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", UUIDS, [UUIDS[5]], 2)) == [5, 4]
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", UUIDS, [UUIDS[5]], 4)) == [5, 4, 6, 7]


def test_h100x8_prefers_the_numa_local_pair_among_what_is_available() -> None:
    logic = logic_for(H100)
    available = [UUIDS[0], UUIDS[4], UUIDS[6], UUIDS[3]]
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", available, [], 2)) == [0, 3]


def test_h100x8_all_eight() -> None:
    logic = logic_for(H100)
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", list(reversed(UUIDS)), [], 8)) == list(range(8))


def test_nvlink_links_outrank_numa_locality(tmp_path: Path) -> None:
    """Two NVLink pairs across NUMA nodes (like H100 NVL bridges): the linked pair wins."""
    gpus = []
    for i, (bus, numa, peer) in enumerate([("18", 0, 1), ("2A", 1, 0), ("3A", 0, 3), ("5D", 1, 2)]):
        gpus.append(f"""
- index: {i}
  uuid: GPU-0000000{i}-0000-0000-0000-000000000000
  name: NVIDIA H100 NVL
  compute_capability: '9.0'
  memory_total_mib: 95830
  pci_bus_id: '00000000:{bus}:00.0'
  pci_device_id: 0x232110de
  numa_node: {numa}
  multiprocessor_count: 132
  nvlink: [{{peer: {peer}, links: 12}}]""")
    fixture = tmp_path / "nvl.yaml"
    fixture.write_text("driver_version: 580.95.05\ncuda_driver_version: '13.0'\ngpus:" + "".join(gpus) + "\n")
    inv = node(str(fixture))
    ids = [g.uuid for g in inv.gpus]
    logic = logic_for(inv)
    assert logic.preferred_allocation("nvidia.com/gpu", ids, [], 2) == [ids[0], ids[1]]
    assert logic.preferred_allocation("nvidia.com/gpu", ids, [ids[2]], 2) == [ids[2], ids[3]]
    # Without its NVLink peer available, GPU 2 takes the other GPU on its NUMA node.
    assert logic.preferred_allocation("nvidia.com/gpu", ids[:3], [ids[2]], 2) == [ids[2], ids[0]]


def test_impossible_requests_are_refused_clearly() -> None:
    logic = logic_for(H100)
    with pytest.raises(AllocationError, match="3 devices requested but only 2 available"):
        logic.preferred_allocation("nvidia.com/gpu", UUIDS[:2], [], 3)
    with pytest.raises(AllocationError, match="smaller than the 2 devices that must be included"):
        logic.preferred_allocation("nvidia.com/gpu", UUIDS, UUIDS[:2], 1)
    with pytest.raises(AllocationError, match="unknown device"):
        logic.preferred_allocation("nvidia.com/gpu", UUIDS, ["GPU-nope"], 1)


def test_ids_the_plugin_does_not_know_in_available_are_ignored() -> None:
    logic = logic_for(H100)
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", ["GPU-stale", UUIDS[7]], [], 1)) == [7]


# --- shared replicas: distributed, packed, spread -----------------------------------------------------

SHARED = "sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2}]}}"


def all_replicas() -> list[str]:
    return [f"{u}::{n}" for u in UUIDS for n in range(2)]


def test_distributed_spreads_a_request_over_distinct_gpus(tmp_path: Path) -> None:
    logic = logic_for(H100, tmp_path, SHARED)
    picked = logic.preferred_allocation("nvidia.com/gpu", all_replicas(), [], 3)
    assert indexes(picked) == [0, 1, 2]


def test_distributed_prefers_gpus_with_the_fewest_replicas_handed_out(tmp_path: Path) -> None:
    logic = logic_for(H100, tmp_path, SHARED)
    handed_out = {f"{UUIDS[0]}::0", f"{UUIDS[1]}::1", f"{UUIDS[2]}::0"}
    available = [i for i in all_replicas() if i not in handed_out]
    assert indexes(logic.preferred_allocation("nvidia.com/gpu", available, [], 2)) == [3, 4]


def test_packed_fills_the_busiest_gpu_first(tmp_path: Path) -> None:
    logic = logic_for(H100, tmp_path, SHARED, shared_devices_allocation_policy="packed")
    available = [i for i in all_replicas() if i != f"{UUIDS[5]}::0"]
    assert logic.preferred_allocation("nvidia.com/gpu", available, [], 1) == [f"{UUIDS[5]}::1"]


def test_spread_avoids_gpus_the_request_already_holds(tmp_path: Path) -> None:
    logic = logic_for(H100, tmp_path, SHARED, shared_devices_allocation_policy="spread")
    must = [f"{UUIDS[0]}::0"]
    picked = logic.preferred_allocation("nvidia.com/gpu", all_replicas(), must, 3)
    assert picked[0] == must[0] and indexes(picked) == [0, 1, 2]


def test_distributed_counts_must_include_as_handed_out(tmp_path: Path) -> None:
    logic = logic_for(H100, tmp_path, SHARED)
    picked = logic.preferred_allocation("nvidia.com/gpu", all_replicas(), [f"{UUIDS[0]}::1"], 2)
    assert indexes(picked) == [0, 1]


# --- MIG devices on the A100 node ---------------------------------------------------------------------


def test_a100_mig_devices_and_the_whole_gpu() -> None:
    inv = node("a100-mig")
    logic = logic_for(inv, mig_strategy="mixed")
    small = [m.uuid for m in inv.gpus[0].mig_devices if m.profile == "1g.10gb"]
    assert logic.preferred_allocation("nvidia.com/mig-1g.10gb", small, [], 1) == [small[0]]
    assert logic.preferred_allocation("nvidia.com/mig-1g.10gb", list(reversed(small)), [], 2) == small
    assert logic.preferred_allocation("nvidia.com/gpu", [inv.gpus[1].uuid], [], 1) == [inv.gpus[1].uuid]


def test_a100_time_sliced_mig_replicas_spread_over_mig_devices(tmp_path: Path) -> None:
    inv = node("a100-mig")
    text = "flags: {migStrategy: mixed}\nsharing: {timeSlicing: {resources: [{name: mig-1g.10gb, replicas: 3}]}}"
    logic = logic_for(inv, tmp_path, text)
    small = [m.uuid for m in inv.gpus[0].mig_devices if m.profile == "1g.10gb"]
    ids = [d.id for d in logic.resources()[1].devices]
    picked = logic.preferred_allocation("nvidia.com/mig-1g.10gb", ids, [], 2)
    assert [p.split("::")[0] for p in picked] == small
