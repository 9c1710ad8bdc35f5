"""Each built-in simulated node describes a real card the way NVML reports it."""

from __future__ import annotations

import pytest

from kgpu.gpu import ComputeCapability, CudaVersion, open_backend
from kgpu.gpu.fixture import builtin_fixture_names

EXPECTED = {
    # name: (gpu count, product name of GPU 0, memory MiB, family, compute capability)
    "p100": (1, "Tesla P100-PCIE-16GB", 16384, "pascal", "6.0"),
    "t4": (1, "Tesla T4", 15360, "turing", "7.5"),
    "a30": (1, "NVIDIA A30", 24576, "ampere", "8.0"),
    "a100-mig": (2, "NVIDIA A100-SXM4-80GB", 81920, "ampere", "8.0"),
    "h100x8": (8, "NVIDIA H100 80GB HBM3", 81559, "hopper", "9.0"),
    "mixed": (2, "Tesla T4", 15360, "turing", "7.5"),
}


def test_every_documented_fixture_is_built_in() -> None:
    assert set(builtin_fixture_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_loads_with_real_product_facts(name: str) -> None:
    count, product, memory, family, cc = EXPECTED[name]
    inv = open_backend(simulate=name).inventory()
    assert inv.backend == "simulated"
    assert len(inv.gpus) == count
    g = inv.gpus[0]
    assert (g.name, g.memory_total_mib, g.family, str(g.compute_capability)) == (product, memory, family, cc)
    assert [x.index for x in inv.gpus] == list(range(count))
    assert len({x.uuid for x in inv.gpus}) == count
    assert all(x.uuid.startswith("GPU-") and x.device_node == f"/dev/nvidia{x.minor}" for x in inv.gpus)
    assert inv.cuda_driver_version >= CudaVersion(12, 0)


def test_p100_is_a_vm_passthrough_without_numa_affinity() -> None:
    (g,) = open_backend(simulate="p100").inventory().gpus
    assert g.numa_node is None
    assert g.pci_bus_id == "00000000:00:04.0"
    assert g.sysfs_bus_id == "0000:00:04.0"
    assert not g.mig_capable


def test_a30_is_mig_capable_with_mig_off() -> None:
    (g,) = open_backend(simulate="a30").inventory().gpus
    assert g.mig_capable and not g.mig_enabled and g.mig_devices == ()


def test_a100_mig_has_one_gpu_partitioned_into_mixed_profiles() -> None:
    inv = open_backend(simulate="a100-mig").inventory()
    migged, whole = inv.gpus
    assert migged.mig_enabled and not whole.mig_enabled
    assert [m.profile for m in migged.mig_devices] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert all(m.parent_uuid == migged.uuid and m.uuid.startswith("MIG-") for m in migged.mig_devices)
    assert sum(m.memory_total_mib for m in migged.mig_devices) <= migged.memory_total_mib
    assert migged.nvlinks_to(1) == 12


def test_h100x8_is_an_nvlink_full_mesh_over_two_numa_nodes() -> None:
    inv = open_backend(simulate="h100x8").inventory()
    for g in inv.gpus:
        assert {p.peer_index for p in g.nvlink_peers} == set(range(8)) - {g.index}
        assert all(p.links == 18 for p in g.nvlink_peers)
        assert g.compute_capability == ComputeCapability(9, 0)
        assert g.multiprocessor_count == 132
    assert [g.numa_node for g in inv.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_mixed_node_has_a_t4_and_an_a30() -> None:
    inv = open_backend(simulate="mixed").inventory()
    assert [g.name for g in inv.gpus] == ["Tesla T4", "NVIDIA A30"]
    assert [g.numa_node for g in inv.gpus] == [0, 1]


def test_simulated_readings_are_plausible_and_consistent_with_memory() -> None:
    backend = open_backend(simulate="t4")
    (g,) = backend.inventory().gpus
    r = backend.readings(g.uuid)
    assert r.memory_used_mib is not None and r.memory_free_mib is not None and r.memory_reserved_mib is not None
    assert r.memory_used_mib + r.memory_free_mib + r.memory_reserved_mib == g.memory_total_mib
    assert r.temperature_c is not None and 0 < r.temperature_c < 100
