"""MPS slices inside the device plugin: a sharing layout for its resources, and a health source.

:class:`MpsSharingLayout` is the device plugin's sharing layout for ``sharing.mps`` (see
:mod:`kgpu.deviceplugin.replicas`): each shared GPU stops being advertised whole, and its slices
become grants of their resources, each carrying the slice's client environment and mounts.
:func:`mps_extras` turns the grants of one request into the container's MPS environment (limits
of several slices of one GPU add up; slices of different GPUs are refused).

:class:`MpsHealthSource` copies the daemons' status files (written by ``kgpu mps-daemon``) into the
plugin's health tracker under the ``mps`` source, one watcher tick at a time: a GPU whose daemon is
down, missing or stale makes all its slices Unhealthy; they are Healthy again once the daemon answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from kgpu.config import MpsConfig
from kgpu.container import AllocationError, ContainerAllocation
from kgpu.deviceplugin.devices import AdvertisedDevice, Device, Grant, ResourceSet
from kgpu.errors import ConfigError
from kgpu.gpu.model import Inventory
from kgpu.sharing.allocation import check_one_gpu, limit_envs, slice_envs, slice_mounts
from kgpu.sharing.layout import ID_SEPARATOR, MpsLayout, MpsSlice, SharedGPU, build_layout
from kgpu.sharing.paths import MpsPaths
from kgpu.sharing.status import MpsHealthWatcher

DYNAMIC = "dynamic"
"""The ``sharing`` of a resource whose IDs are dynamic shares (``sharing.mps.dynamic``)."""

MPS_SOURCE = "mps"
"""The health source name under which daemon status reaches the device plugin's tracker."""


class MpsSharingLayout:
    """``sharing.mps`` as a device-plugin sharing layout (NVIDIA's equal replicas and kgpu's slices)."""

    def __init__(self, config: MpsConfig, paths: MpsPaths) -> None:
        self.config = config
        self.paths = paths

    def apply(self, resources: Mapping[str, ResourceSet], node: Inventory) -> dict[str, ResourceSet]:
        layout = build_layout(node, self.config)
        shared = layout.shared_uuids
        whole: dict[str, Grant] = {}
        advertised_as: dict[str, str] = {}
        for r in resources.values():
            for g in r.grants:
                if g.device.uuid in shared and not g.device.is_mig and not g.is_replica:
                    whole[g.device.uuid] = g
                    advertised_as[g.device.uuid] = r.name
        missing = [g for g in layout.gpus if g.uuid not in whole]
        if missing:
            names = ", ".join(f"GPU {g.index} ({g.uuid})" for g in missing)
            raise ConfigError(f"{self.config.source}: sharing.mps selects {names}, which this node does not "
                              "advertise as a whole GPU, so it cannot be shared through MPS")
        # NVIDIA's equal replicas share the GPUs of the resource they name (after a resources.gpus rename).
        sources = {r.name: r.source for r in self.config.resources}
        for gpu in layout.gpus:
            wrong = {sources[s.resource] for s in gpu.slices if s.resource in sources} - {advertised_as[gpu.uuid]}
            if wrong:
                raise ConfigError(
                    f"{self.config.source}: sharing.mps shares GPU {gpu.index} ({gpu.uuid}) as {', '.join(wrong)}, "
                    f"but this node advertises it as {advertised_as[gpu.uuid]}; select it with devices, or name "
                    f"{advertised_as[gpu.uuid]}"
                )
        out: dict[str, ResourceSet] = {}
        for name, r in resources.items():
            kept = tuple(g for g in r.grants if g.device.uuid not in shared)
            if kept:
                out[name] = replace(r, grants=kept)
        for gpu in layout.gpus:
            device = whole[gpu.uuid].device
            if gpu.dynamic_shares:
                # shares carved out per pod: the kubelet counts them; each container's limits come from its pod
                name = next(r.name for r in resources.values() if whole[gpu.uuid] in r.grants)
                previous = out.get(name)
                if previous is not None and previous.sharing != DYNAMIC:
                    raise ConfigError(dynamic_beside_whole(self.config.source, name, previous))
                out[name] = ResourceSet(name=name, grants=(*(previous.grants if previous else ()),
                                                           *share_grants(gpu, device)), sharing=DYNAMIC)
                continue
            mounts = slice_mounts(gpu.uuid, self.paths)
            for s in gpu.slices:
                grant = Grant(
                    advertised=AdvertisedDevice(
                        id=s.id, health_uuids=device.health_uuids, gpu_uuid=gpu.uuid, numa_node=device.numa_node,
                        replica=s.number, mps_memory_mib=s.memory_mib, mps_compute_percent=s.compute_percent,
                    ),
                    device=device,
                    envs=slice_envs([s], self.paths),
                    mounts=mounts,
                    mps=s,
                )
                previous = out.get(s.resource)
                out[s.resource] = ResourceSet(
                    name=s.resource,
                    grants=(*(previous.grants if previous else ()), grant),
                    sharing="mps",
                    fail_requests_greater_than_one=self.config.fail_requests_greater_than_one,
                )
        return out


def share_grants(gpu: SharedGPU, device: Device) -> tuple[Grant, ...]:
    """The kubelet's device IDs for a dynamically shared GPU: ``<uuid>::0`` … ``<uuid>::<shares-1>``."""
    return tuple(
        Grant(advertised=AdvertisedDevice(id=f"{gpu.uuid}{ID_SEPARATOR}{n}", health_uuids=device.health_uuids,
                                          gpu_uuid=gpu.uuid, numa_node=device.numa_node, replica=n),
              device=device)
        for n in range(gpu.dynamic_shares)
    )


def dynamic_beside_whole(source: str, name: str, other: ResourceSet) -> str:
    """Why one resource cannot have both dynamic shares and other devices."""
    kind = "whole GPUs" if other.sharing == "none" else f"{other.sharing} replicas"
    return (f"{source}: sharing.mps.dynamic shares GPUs advertised as {name}, which on this node also has {kind} "
            f"({', '.join(sorted({g.device.index for g in other.grants}))}): the kubelet would hand either kind to "
            f"any pod asking for {name}. Share every such GPU dynamically (sharing.mps.dynamic.devices: all), or "
            "advertise the others under another name (resources.gpus)")


def mps_extras(grants: Sequence[Grant]) -> ContainerAllocation:
    """The MPS environment and mounts for one request's grants: one GPU, limits summed."""
    slices: list[MpsSlice] = [g.mps for g in grants if g.mps is not None]
    if len(slices) != len(grants):
        raise AllocationError("a request mixes MPS slices with unshared devices")
    check_one_gpu(slices)
    return ContainerAllocation(envs={**grants[0].envs, **limit_envs(slices)}, mounts=grants[0].mounts)


def layout_for(inventory: Inventory, config: MpsConfig | None) -> MpsLayout:
    return build_layout(inventory, config) if config is not None else MpsLayout()


class SourceStateSink(Protocol):
    """What :class:`MpsHealthSource` needs of the device plugin's ``HealthTracker``."""

    def set_source_state(self, source: str, uuid: str, healthy: bool, reason: str = "") -> bool: ...


class MpsHealthSource:
    """The daemons of ``layout``'s GPUs, as a health source: :meth:`tick` reads their status files once."""

    def __init__(self, layout: MpsLayout, paths: MpsPaths, tracker: SourceStateSink) -> None:
        self.watcher = MpsHealthWatcher(paths, [g.uuid for g in layout.gpus])
        self.tracker = tracker

    def tick(self) -> None:
        for change in self.watcher.check():
            self.tracker.set_source_state(MPS_SOURCE, change.uuid, change.healthy, change.reason)
