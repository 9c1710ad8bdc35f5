"""Which container holds which GPU: kubelet PodResources answers mapped onto the node's devices.

Pure logic, no gRPC: :mod:`kgpu.exporter.podresources` fetches the kubelet's ``List`` answer and
turns it into :class:`ContainerDevices` values; this module resolves their device IDs the way
dcgm-exporter's Kubernetes transformation does, plus the ID forms kgpu's device plugin advertises.

Device IDs understood: GPU UUIDs, MIG UUIDs (``MIG-…`` and the legacy ``MIG-GPU-<uuid>/<gi>/<ci>``),
index IDs (``0``, and ``0:1`` for MIG device 1 of GPU 0), each optionally followed by ``::<n>``
(replica ``n`` of a shared GPU); and GKE's device plugin names, as dcgm-exporter reads them:
``nvidia0``, ``nvidia0/gi3`` (GPU instance 3 of GPU 0), with ``/vgpu<n>`` for a shared replica.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from kgpu.gpu.model import Inventory

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
VENDOR_PREFIX = "nvidia.com/"
_GKE_ID = re.compile(r"^nvidia(\d+)(?:/gi(\d+))?(?:/vgpu(\d+))?$")


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    """One ``ContainerDevices`` entry of a PodResources ``List`` answer."""

    namespace: str
    pod: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PodRef:
    """The container a series is attributed to; ``vgpu`` is the replica number of a shared GPU."""

    pod: str
    namespace: str
    container: str
    vgpu: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedID:
    uuid: str
    """The GPU UUID, or the MIG device UUID for a MIG device."""
    gpu_uuid: str
    """The physical GPU the device lives on."""
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    """Containers per device UUID (GPU or MIG), in the kubelet's order."""

    by_uuid: dict[str, tuple[PodRef, ...]]
    allocated_per_gpu: dict[str, int]
    """Device IDs (whole GPUs, replicas, MIG devices) the kubelet assigned on each physical GPU."""
    unresolved: tuple[str, ...] = ()
    """Device IDs of NVIDIA resources that match no device of this node."""

    def containers(self, uuid: str, *, all_sharing: bool) -> tuple[PodRef, ...]:
        """dcgm-exporter's rule: the last container listed wins (without a ``vgpu`` label), unless
        every container sharing the device is wanted (``--kubernetes-virtual-gpus``)."""
        refs = self.by_uuid.get(uuid, ())
        if all_sharing or not refs:
            return refs
        last = refs[-1]
        return (PodRef(last.pod, last.namespace, last.container),)


def resolve_device_id(device_id: str, inventory: Inventory) -> ResolvedID | None:
    gke = _GKE_ID.match(device_id)
    if gke is not None:
        return _resolve_gke(gke, inventory)
    base, sep, replica = device_id.partition("::")
    resolved = _resolve_base(base, inventory)
    if resolved is None:
        return None
    return ResolvedID(resolved.uuid, resolved.gpu_uuid, replica if sep else None)


def _resolve_gke(match: re.Match[str], inventory: Inventory) -> ResolvedID | None:
    gpu = inventory.by_index(int(match.group(1)))
    if gpu is None:
        return None
    if match.group(2) is None:
        return ResolvedID(gpu.uuid, gpu.uuid, match.group(3))
    for mig in gpu.mig_devices:
        if mig.gpu_instance_id == int(match.group(2)):
            return ResolvedID(mig.uuid, gpu.uuid, match.group(3))
    return None


def _resolve_base(device_id: str, inventory: Inventory) -> ResolvedID | None:
    gpu = inventory.by_uuid(device_id)
    if gpu is not None:
        return ResolvedID(gpu.uuid, gpu.uuid)
    for mig in inventory.mig_devices:
        if mig.uuid == device_id:
            return ResolvedID(mig.uuid, mig.parent_uuid)
    if device_id.startswith("MIG-GPU-"):
        # Drivers before R470 named MIG devices MIG-GPU-<parent uuid>/<gi>/<ci>.
        parent, _, rest = device_id.removeprefix("MIG-").partition("/")
        gi, _, ci = rest.partition("/")
        for mig in inventory.mig_devices:
            if mig.parent_uuid == parent and str(mig.gpu_instance_id) == gi and str(mig.compute_instance_id) == ci:
                return ResolvedID(mig.uuid, mig.parent_uuid)
        return None
    major, colon, minor = device_id.partition(":")
    if not major.isdigit() or (colon and not minor.isdigit()):
        return None
    gpu = inventory.by_index(int(major))
    if gpu is None:
        return None
    if not colon:
        return ResolvedID(gpu.uuid, gpu.uuid)
    for mig in gpu.mig_devices:
        if mig.index == int(minor):
            return ResolvedID(mig.uuid, gpu.uuid)
    return None


def is_nvidia_resource(name: str, extra_names: Collection[str] = ()) -> bool:
    """dcgm-exporter takes ``nvidia.com/gpu``, ``nvidia.com/mig-*`` and configured names; kgpu also takes
    every other ``nvidia.com/`` resource (renamed shared GPUs, MPS slices such as ``nvidia.com/gpu-20gb``),
    whose device IDs must still resolve to a GPU of this node to count."""
    return name == GPU_RESOURCE or name.startswith(VENDOR_PREFIX) or name in extra_names


def attribute(
    entries: Iterable[ContainerDevices], inventory: Inventory, extra_resource_names: Collection[str] = ()
) -> Attribution:
    """Map every NVIDIA device a container holds to that container."""
    by_uuid: dict[str, list[PodRef]] = {}
    allocated: dict[str, int] = {}
    unresolved: list[str] = []
    for entry in entries:
        if not is_nvidia_resource(entry.resource_name, extra_resource_names):
            continue
        for device_id in entry.device_ids:
            resolved = resolve_device_id(device_id, inventory)
            if resolved is None:
                unresolved.append(device_id)
                continue
            ref = PodRef(entry.pod, entry.namespace, entry.container, resolved.replica)
            refs = by_uuid.setdefault(resolved.uuid, [])
            if ref not in refs:
                refs.append(ref)
            allocated[resolved.gpu_uuid] = allocated.get(resolved.gpu_uuid, 0) + 1
    return Attribution(
        by_uuid={uuid: tuple(refs) for uuid, refs in by_uuid.items()},
        allocated_per_gpu=allocated,
        unresolved=tuple(unresolved),
    )
