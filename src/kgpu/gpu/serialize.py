"""The stable JSON shape of the inventory, as ``kgpu gpus --json`` prints it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from kgpu.gpu.model import GPU, GPUReadings, Inventory, MigDevice


def mig_to_json(m: MigDevice) -> dict[str, Any]:
    return {
        "uuid": m.uuid,
        "index": m.index,
        "profile": m.profile,
        "gpu_instance_id": m.gpu_instance_id,
        "compute_instance_id": m.compute_instance_id,
        "memory_total_mib": m.memory_total_mib,
        "multiprocessor_count": m.multiprocessor_count,
        "parent_uuid": m.parent_uuid,
    }


def gpu_to_json(gpu: GPU, inventory: Inventory, readings: GPUReadings | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": gpu.index,
        "minor": gpu.minor,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "brand": gpu.brand,
        "family": gpu.family,
        "compute_capability": str(gpu.compute_capability),
        "memory_total_mib": gpu.memory_total_mib,
        "pci_bus_id": gpu.pci_bus_id,
        "pci_device_id": f"0x{gpu.pci_device_id:08x}",
        "numa_node": gpu.numa_node,
        "multiprocessor_count": gpu.multiprocessor_count,
        "persistence_mode": gpu.persistence_mode,
        "compute_mode": str(gpu.compute_mode),
        "ecc_enabled": gpu.ecc_enabled,
        "mig_capable": gpu.mig_capable,
        "mig_enabled": gpu.mig_enabled,
        "mig_devices": [mig_to_json(m) for m in gpu.mig_devices],
        "nvlink_peers": [{"index": p.peer_index, "uuid": p.peer_uuid, "links": p.links} for p in gpu.nvlink_peers],
        "driver_version": inventory.driver_version,
        "cuda_driver_version": str(inventory.cuda_driver_version),
        "backend": inventory.backend,
    }
    if readings is not None:
        values = asdict(readings)
        values.pop("uuid")
        out["readings"] = values
    return out


def inventory_to_json(inventory: Inventory, readings: dict[str, GPUReadings] | None = None) -> list[dict[str, Any]]:
    return [gpu_to_json(g, inventory, (readings or {}).get(g.uuid)) for g in inventory.gpus]
