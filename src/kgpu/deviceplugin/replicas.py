"""Sharing layouts: time-slicing replicas, and the order in which layouts apply (pure).

Each layout turns some devices of a resource into replicas ``<uuid>::<n>``, optionally under a new
name (``nvidia.com/gpu.shared`` with ``renameByDefault``), as NVIDIA's ``internal/rm`` does. Unlike
NVIDIA, several entries may name the same resource with different ``devices`` and ``replicas``
(per-GPU replica counts). MPS slices are the other layout (:mod:`kgpu.deviceplugin.mps`).

Example::

    for layout in sharing_layouts(config):
        resources = layout.apply(resources, inventory)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from kgpu.config.values import PluginConfig, ReplicatedResource, ReplicatedResources
from kgpu.deviceplugin.devices import Device, Grant, ResourceSet, grant
from kgpu.deviceplugin.mps import MpsSharingLayout
from kgpu.errors import ConfigError
from kgpu.gpu.model import Inventory
from kgpu.sharing.paths import MpsPaths

MAX_DEVICES_PER_RESOURCE = 16_384
"""Devices one resource may advertise. The kubelet receives a resource's whole list in one ListAndWatch
message, which gRPC limits to 4 MiB (~60 000 devices); checked before any replica is built, so a
config asking for millions is refused at once instead of filling the memory."""


class SharingLayout(Protocol):
    """Turns some devices into shared replicas. Layouts run in order over the node's resources.

    To add a sharing strategy (MPS slices, issue 8), implement ``apply`` and return it from
    :func:`sharing_layouts`.
    """

    def apply(self, resources: Mapping[str, ResourceSet], node: Inventory) -> dict[str, ResourceSet]: ...


def _select(resource: ReplicatedResource, devices: Sequence[Device], where: str) -> list[Device]:
    """NVIDIA's getIDsOfDevicesToReplicate, in index order, with errors that name the config key."""
    sel = resource.devices
    if sel.all:
        return list(devices)
    if sel.count is not None:
        if sel.count > len(devices):
            raise ConfigError(
                f"{where}.devices asks to share {sel.count} {resource.name} devices, but this node has "
                f"only {len(devices)}"
            )
        return list(devices[: sel.count])
    picked: list[Device] = []
    for ref in sel.refs:
        match = next((d for d in devices if ref in (d.uuid, d.index)), None)
        if match is None:
            have = ", ".join(f"{d.index} ({d.uuid})" for d in devices) or "none"
            raise ConfigError(
                f"{where}.devices: no {resource.name} device {ref!r} on this node; it has {have}"
            )
        if match not in picked:
            picked.append(match)
    return picked


@dataclass(frozen=True, slots=True)
class ReplicaLayout:
    """Time-slicing (and NVIDIA-style equal MPS replicas): each selected device becomes ``replicas`` IDs."""

    settings: ReplicatedResources
    sharing: str = "time-slicing"
    config_key: str = "sharing.timeSlicing"

    def apply(self, resources: Mapping[str, ResourceSet], node: Inventory) -> dict[str, ResourceSet]:
        remaining: dict[str, list[Grant]] = {name: list(r.grants) for name, r in resources.items()}
        out_grants: dict[str, list[Grant]] = {}
        shared_names: set[str] = set()
        for i, entry in enumerate(self.settings.resources):
            where = f"{self.config_key}.resources[{i}]"
            source = resources.get(entry.name)
            if source is None:
                continue  # NVIDIA skips resources this node does not have (e.g. a MIG profile)
            unshared = [g for g in remaining.get(entry.name, []) if not g.is_replica]
            # A device already shared by an earlier entry is not shared twice.
            chosen = _select(entry, [g.device for g in unshared], where)
            if entry.replicas * len(chosen) > MAX_DEVICES_PER_RESOURCE:
                raise ConfigError(
                    f"{where}.replicas: {entry.replicas} replicas of {len(chosen)} device(s) would advertise "
                    f"{entry.replicas * len(chosen)} {entry.advertised_name} devices; a resource can have at most "
                    f"{MAX_DEVICES_PER_RESOURCE} (the kubelet reads a resource's whole device list in one 4 MiB "
                    "message)"
                )
            chosen_ids = {d.uuid for d in chosen}
            remaining[entry.name] = [g for g in remaining[entry.name] if g.device.uuid not in chosen_ids]
            target = entry.advertised_name
            shared_names.add(target)
            for d in chosen:
                out_grants.setdefault(target, []).extend(
                    grant(d, f"{d.uuid}::{n}", replica=n) for n in range(entry.replicas)
                )
        merged: dict[str, ResourceSet] = {}
        for name, grants in remaining.items():
            if grants:
                base = resources[name]
                merged[name] = replace(base, grants=tuple(grants))
        for name, grants in out_grants.items():
            previous = merged.get(name)
            merged[name] = ResourceSet(
                name=name,
                grants=(*(previous.grants if previous else ()), *grants),
                sharing=self.sharing,
                fail_requests_greater_than_one=self.settings.fail_requests_greater_than_one,
            )
        return merged


def sharing_layouts(config: PluginConfig) -> list[SharingLayout]:
    """The sharing layouts the config asks for, in the order they apply."""
    layouts: list[SharingLayout] = []
    ts = config.sharing.time_slicing
    if ts is not None and ts.resources:
        layouts.append(ReplicaLayout(ts))
    mps = config.sharing.mps
    if mps is not None and mps.enabled:
        layouts.append(MpsSharingLayout(mps, MpsPaths(Path(config.flags.mps_root))))
    return layouts
