"""The node's GPU inventory, its live readings and health events, from NVML or a simulated fixture.

Example::

    from kgpu.gpu import open_backend
    backend = open_backend(simulate="h100x8")
    for gpu in backend.inventory().gpus:
        print(gpu.index, gpu.uuid, gpu.name)
"""

from kgpu.gpu.backend import BACKEND_NAMES, BackendError, GPUBackend, open_backend
from kgpu.gpu.health import HealthEvent, HealthEventKind
from kgpu.gpu.model import (
    GPU,
    ComputeCapability,
    ComputeMode,
    CudaVersion,
    GPUReadings,
    Inventory,
    MigDevice,
    MigEngines,
    NvLinkPeer,
    architecture_family,
    mig_profile_slices,
    sysfs_bus_id,
)

__all__ = [
    "BACKEND_NAMES",
    "GPU",
    "BackendError",
    "ComputeCapability",
    "ComputeMode",
    "CudaVersion",
    "GPUBackend",
    "GPUReadings",
    "HealthEvent",
    "HealthEventKind",
    "Inventory",
    "MigDevice",
    "MigEngines",
    "NvLinkPeer",
    "architecture_family",
    "mig_profile_slices",
    "open_backend",
    "sysfs_bus_id",
]
