"""Values exchanged between the device plugin's decision logic and its gRPC server.

The logic (config → advertised resources → allocation plans) is pure and knows nothing of
gRPC; the server turns these values into v1beta1 messages and owns sockets, health and retries.

Example::

    logic = build_logic(inventory, config)            # kgpu.deviceplugin.resources
    for resource in logic.resources():
        print(resource.name, [d.id for d in resource.devices])
    plan = logic.allocate("nvidia.com/gpu", ["GPU-…"])
    plan.envs["NVIDIA_VISIBLE_DEVICES"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kgpu.errors import KgpuError


@dataclass(frozen=True, slots=True)
class AdvertisedDevice:
    """One device as the kubelet sees it in ListAndWatch."""

    id: str
    """The ID the kubelet sees: a GPU UUID or index, a MIG UUID, or ``<id>::<n>`` for a shared replica."""
    health_uuids: tuple[str, ...]
    """UUIDs whose health decides this device's health (the GPU; for MIG, the MIG device and its parent)."""
    gpu_uuid: str
    """The physical GPU this device lives on (for a MIG device or replica: its parent GPU)."""
    numa_node: int | None
    replica: int | None = None
    """Replica number for a shared (time-sliced or MPS) device, else None."""
    mps_memory_mib: int | None = None
    """For an MPS slice: its pinned device memory limit (MiB); else None."""
    mps_compute_percent: int | None = None
    """For an MPS slice: its active thread percentage (share of SMs); else None."""


@dataclass(frozen=True, slots=True)
class AdvertisedResource:
    name: str
    """Extended resource name, e.g. ``nvidia.com/gpu`` or ``nvidia.com/mig-1g.10gb``."""
    socket_name: str
    """Socket file name in the kubelet's device-plugins directory, e.g. ``nvidia-gpu.sock``."""
    devices: tuple[AdvertisedDevice, ...]
    shared: bool = False
    fail_requests_greater_than_one: bool = False


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class DeviceNode:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True, slots=True)
class ContainerAllocation:
    """What one container gets for its request: the v1beta1 ContainerAllocateResponse, without gRPC."""

    envs: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    devices: tuple[DeviceNode, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    cdi_devices: tuple[str, ...] = ()
    """Fully-qualified CDI device names for the CRI ``cdi_devices`` field, e.g. ``nvidia.com/gpu=GPU-…``."""


class AllocationError(KgpuError):
    """A request the plugin must refuse (unknown ID, too many shared replicas, ...); the message is for the admin."""


class DevicePluginLogic(Protocol):
    """Everything the gRPC server asks of the decision logic. Implementations never block on I/O."""

    def resources(self) -> tuple[AdvertisedResource, ...]: ...

    def allocate(self, resource_name: str, device_ids: Sequence[str]) -> ContainerAllocation:
        """Plan one container's allocation; raises AllocationError for a request that must fail."""
        ...

    def preferred_allocation(
        self, resource_name: str, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        """Pick ``size`` IDs from ``available``, always including ``must_include``."""
        ...
