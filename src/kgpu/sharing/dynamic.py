"""GPUs shared dynamically: each pod's share carved out by the scheduler extender, enforced by MPS at Allocate.

A GPU is whole, in fixed slices, or dynamic. A dynamic GPU is advertised to the kubelet as
``shares`` device IDs of ``nvidia.com/gpu`` (``<uuid>::<n>``, the form NVIDIA's replicas and
dcgm-exporter's attribution use), so the kubelet admits at most that many containers on it; what
each container may use (memory, SMs) is the share the extender recorded on its pod. Allocate gives the
container that GPU as an MPS client of its daemon with exactly those limits
(``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``, ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``: the same client
environment fixed slices and the DRA driver's shares get, :func:`kgpu.sharing.allocation.client_envs`).
A container given several GPUs has them whole (the extender gives several only whole), without MPS.

Pure. Example::

    gpus = dynamic_gpus(inventory, DynamicShares(DeviceSelector(all=True), shares=10), source="config.yaml")
    gpus[0].share_ids()[:2]                                  # ('GPU-…::0', 'GPU-…::1')
    grant = share_grant(pending.shares, {g.uuid: g for g in gpus}, MpsPaths())
    grant.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"]           # '0=20000M'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kgpu.config.limits import MAX_MPS_CLIENTS_PER_GPU as MAX_CLIENTS_PER_DAEMON
from kgpu.config.values import DynamicShares
from kgpu.errors import ConfigError, KgpuError
from kgpu.gpu.model import Inventory
from kgpu.scheduler.assignment import Share
from kgpu.scheduler.inventory import NodeGPU
from kgpu.sharing.allocation import client_envs, slice_mounts
from kgpu.sharing.layout import ID_SEPARATOR, MIN_COMPUTE_CAPABILITY, gpu_of_device_id, select_gpus
from kgpu.sharing.paths import MpsPaths


class ShareError(KgpuError):
    """A share the node cannot give (a GPU it does not share dynamically)."""


@dataclass(frozen=True, slots=True)
class DynamicGPU:
    uuid: str
    index: int
    name: str
    memory_mib: int
    multiprocessor_count: int
    numa_node: int | None
    shares: int

    def share_ids(self) -> tuple[str, ...]:
        return tuple(f"{self.uuid}{ID_SEPARATOR}{n}" for n in range(self.shares))


def dynamic_gpus(inventory: Inventory, config: DynamicShares, source: str) -> tuple[DynamicGPU, ...]:
    """The GPUs ``sharing.mps.dynamic`` selects, each shared by up to ``shares`` containers; ConfigError when
    one cannot be."""
    devices, shares = config.devices, config.shares
    where = f"{source}: sharing.mps.dynamic"
    if not 1 <= shares <= MAX_CLIENTS_PER_DAEMON:
        raise ConfigError(f"{where}.shares: {shares}: allowed 1 to {MAX_CLIENTS_PER_DAEMON}, the most MPS clients "
                          "one daemon serves on Volta and newer")
    out = []
    for gpu in select_gpus(devices, inventory.gpus, where):
        if gpu.mig_enabled:
            raise ConfigError(f"{where} selects GPU {gpu.index} ({gpu.name}), which has MIG enabled: MPS shares need "
                              "a whole GPU; disable MIG on it or leave it out of devices")
        if gpu.compute_capability < MIN_COMPUTE_CAPABILITY:
            raise ConfigError(f"{where} selects GPU {gpu.index} ({gpu.name}, compute capability "
                              f"{gpu.compute_capability}): per-client MPS limits need Volta ({MIN_COMPUTE_CAPABILITY}) "
                              "or newer; share it with sharing.timeSlicing instead")
        out.append(DynamicGPU(uuid=gpu.uuid, index=gpu.index, name=gpu.name, memory_mib=gpu.memory_total_mib,
                              multiprocessor_count=gpu.multiprocessor_count, numa_node=gpu.numa_node, shares=shares))
    return tuple(out)


def published(gpus: Sequence[DynamicGPU], healthy: Callable[[str], bool]) -> tuple[NodeGPU, ...]:
    """The node's dynamic GPUs as the extender reads them (annotation ``kgpu.io/dynamic-gpus``)."""
    return tuple(NodeGPU(uuid=g.uuid, index=g.index, type=g.name, memory_mib=g.memory_mib, shares=g.shares,
                         numa=g.numa_node if g.numa_node is not None and g.numa_node >= 0 else 0,
                         healthy=healthy(g.uuid)) for g in gpus)


@dataclass(frozen=True, slots=True)
class ShareGrant:
    """What a container gets for its shares: the GPUs, and the MPS client's environment and mounts (one share)."""

    gpu_uuids: tuple[str, ...]
    envs: Mapping[str, str]
    mounts: tuple[Any, ...]


def share_grant(shares: Sequence[Share], gpus: Mapping[str, DynamicGPU], paths: MpsPaths) -> ShareGrant:
    """The container's grant for the ``shares`` the extender gave it; ShareError for a GPU not shared here."""
    unknown = [s.uuid for s in shares if s.uuid not in gpus]
    if unknown or not shares:
        raise ShareError(f"the pod's share names GPU {', '.join(unknown) or '(none)'}, which this node does not share "
                         f"dynamically (it shares {', '.join(gpus) or 'none'}); the pod was placed for another node's "
                         "GPUs or an older configuration")
    if len(shares) > 1:
        return ShareGrant(gpu_uuids=tuple(s.uuid for s in shares), envs={}, mounts=())
    (share,) = shares
    gpu = gpus[share.uuid]
    envs = client_envs(share.uuid, paths, min(share.memory_mib, gpu.memory_mib),
                       share.cores if 0 < share.cores < 100 else None)
    return ShareGrant(gpu_uuids=(share.uuid,), envs=envs, mounts=slice_mounts(share.uuid, paths))


def preferred_shares(available: Sequence[str], must_include: Sequence[str], size: int,
                     gpu_uuids: Sequence[str]) -> list[str]:
    """Share IDs for GetPreferredAllocation: ``size`` IDs on the GPUs the pod being allocated was given, so the
    IDs the kubelet records (PodResources, dcgm-exporter's attribution) name the GPU the container really gets."""
    chosen = list(dict.fromkeys(must_include))
    for uuid in gpu_uuids:
        if len(chosen) >= size:
            break
        if any(gpu_of_device_id(c) == uuid for c in chosen):
            continue
        pick = next((d for d in available if gpu_of_device_id(d) == uuid and d not in chosen), None)
        if pick is not None:
            chosen.append(pick)
    for d in available:  # the GPUs' IDs are all taken: any free IDs, Allocate still gives the recorded GPUs
        if len(chosen) >= size:
            break
        if d not in chosen:
            chosen.append(d)
    return chosen[:size]
