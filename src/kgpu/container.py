"""What a container is given for the GPUs it was allocated: environment, mounts, device nodes, CDI names.

Plain values shared by everything that hands GPUs to containers — the device plugin's Allocate,
MPS slices (:mod:`kgpu.sharing`), the DRA driver — so that none of them imports another for them.

Example::

    ContainerAllocation(envs={"NVIDIA_VISIBLE_DEVICES": "GPU-…"}, devices=(DeviceNode("/dev/nvidia0", "/dev/nvidia0"),))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kgpu.errors import KgpuError


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
    """A request that must be refused (unknown ID, too many shared replicas, ...); the message is for the admin."""
