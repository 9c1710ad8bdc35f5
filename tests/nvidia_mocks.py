"""NVIDIA's mock devices (internal/resource/testing, v0.20) as kgpu inventory, for replaying its label tests.

A full GPU is ``MOCKMODEL``, 300 MiB, compute capability 8.0 (ampere); a MIG-enabled GPU reports
compute capability 0.0 (so it has no family/compute labels); ``NewMigDevice(gi, ci, gb)`` is profile
``<gi>g.<gb>gb`` with ``gb`` as its memory.
"""

from __future__ import annotations

from kgpu.gpu.model import GPU, ComputeCapability, ComputeMode, CudaVersion, Inventory, MigDevice, MigEngines


def full_gpu(index: int = 0) -> GPU:
    return GPU(index=index, minor=index, uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000", name="MOCKMODEL",
               brand="Tesla", family="ampere", compute_capability=ComputeCapability(8, 0), memory_total_mib=300,
               pci_bus_id=f"00000000:{index + 1:02x}:00.0", pci_device_id=0x20b010de, numa_node=None,
               multiprocessor_count=0, persistence_mode=True, compute_mode=ComputeMode.DEFAULT, ecc_enabled=None,
               mig_capable=False, mig_enabled=False)


def mig(gi: int, ci: int, gb: int, **attributes: int) -> MigDevice:
    """NVIDIA's NewMigDevice(gi, ci, gb, attributes); parent filled in by :func:`mig_enabled_gpu`."""
    engines = MigEngines(**{k.removeprefix("engines_"): v for k, v in attributes.items() if k.startswith("engines_")})
    return MigDevice(uuid="", index=0, profile=f"{gi}g.{gb}gb", gpu_instance_id=0, compute_instance_id=0,
                     memory_total_mib=gb, multiprocessor_count=attributes.get("multiprocessors", 0), parent_uuid="",
                     parent_index=0, gpu_instance_slices=gi, compute_instance_slices=ci, engines=engines)


def mig_enabled_gpu(index: int = 0, *migs: MigDevice) -> GPU:
    gpu = full_gpu(index)
    children = tuple(
        MigDevice(**{**{f: getattr(m, f) for f in MigDevice.__dataclass_fields__},
                     "uuid": f"MIG-{index}-{i}", "index": i, "parent_uuid": gpu.uuid, "parent_index": index})
        for i, m in enumerate(migs)
    )
    return GPU(**{**{f: getattr(gpu, f) for f in GPU.__dataclass_fields__},
                  "compute_capability": ComputeCapability(0, 0), "mig_capable": True, "mig_enabled": True,
                  "mig_devices": children})


def node(*gpus: GPU) -> Inventory:
    renumbered = [g if g.index == i else _reindex(g, i) for i, g in enumerate(gpus)]
    return Inventory(backend="simulated", driver_version="550.54.15", cuda_driver_version=CudaVersion(12, 4),
                     gpus=tuple(renumbered))


def _reindex(gpu: GPU, index: int) -> GPU:
    if gpu.mig_enabled:
        return mig_enabled_gpu(index, *gpu.mig_devices)
    return full_gpu(index)
