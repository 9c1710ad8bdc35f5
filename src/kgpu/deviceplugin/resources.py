"""Which resources a node advertises to the kubelet, built from the inventory and the config.

The steps follow NVIDIA's ``internal/rm`` (device map, then replicas):

1. **Base devices.** Whole GPUs go to the first ``resources.gpus`` pattern matching the product
   name (default ``nvidia.com/gpu``). MIG devices, under MIG strategy ``single``, go to
   ``nvidia.com/gpu`` (all MIG devices must share one profile); under ``mixed`` to
   ``nvidia.com/mig-<profile>`` (or the first ``resources.mig`` pattern). A GPU in MIG mode is
   never advertised whole.
2. **Sharing layouts.** Each layout (time-slicing today; MPS slices plug in the same way) turns
   some devices of a resource into replicas ``<uuid>::<n>``, optionally under a new name
   (``nvidia.com/gpu.shared`` with ``renameByDefault``). Unlike NVIDIA, several entries may name
   the same resource with different ``devices`` and ``replicas`` (per-GPU replica counts).

Device IDs the kubelet sees are UUIDs (``GPU-…``, ``MIG-…``) or ``<uuid>::<n>``, as NVIDIA's
plugin advertises them whatever the device-ID strategy; ``deviceIDStrategy`` decides how the
devices are named *to the container runtime* (see :mod:`kgpu.deviceplugin.allocate`).

Example::

    logic = build_logic(open_backend(simulate="a100-mig").inventory(), resolve_config({"mig-strategy": "mixed"}))
    [(r.name, len(r.devices)) for r in logic.resources()]
    # [('nvidia.com/gpu', 1), ('nvidia.com/mig-1g.10gb', 2), ('nvidia.com/mig-2g.20gb', 1), ...]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kgpu.config.names import check_sharing_names
from kgpu.config.values import (
    PluginConfig,
    ReplicatedResource,
    ReplicatedResources,
)
from kgpu.deviceplugin.plan import AdvertisedDevice, AdvertisedResource, ContainerAllocation, Mount
from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, Inventory, MigDevice, sysfs_bus_id

if TYPE_CHECKING:
    from kgpu.deviceplugin.logic import GPUResources
    from kgpu.sharing.layout import MpsSlice

CONTROL_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
"""Device nodes every container with a GPU needs, added when they exist (NVIDIA's GetDevicePaths)."""


@dataclass(frozen=True, slots=True)
class Device:
    """A whole GPU or a MIG device: what one unshared device ID gives a container."""

    uuid: str
    index: str
    """NVIDIA's index form: ``"0"`` for a GPU, ``"0:1"`` (GPU index : MIG device index) for a MIG device."""
    gpu_uuid: str
    gpu_index: int
    numa_node: int | None
    device_nodes: tuple[str, ...]
    """Device nodes as container paths: ``/dev/nvidia0``, plus ``/dev/nvidia-caps/nvidia-capN`` for MIG."""
    mig_profile: str | None = None
    memory_mib: int = 0
    multiprocessor_count: int = 0

    @property
    def is_mig(self) -> bool:
        return self.mig_profile is not None

    @property
    def health_uuids(self) -> tuple[str, ...]:
        return (self.uuid, self.gpu_uuid) if self.is_mig else (self.uuid,)


@dataclass(frozen=True, slots=True)
class Grant:
    """One advertised device ID and what a container receives for it.

    ``envs`` and ``mounts`` are extras beyond the device list strategy, e.g. an MPS slice's
    memory and thread limits (issue 8); time-slicing adds none.
    """

    advertised: AdvertisedDevice
    device: Device
    envs: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    mps: MpsSlice | None = None
    """The MPS slice behind this ID (its memory and SM limits), for ``sharing.mps``."""

    @property
    def id(self) -> str:
        return self.advertised.id

    @property
    def is_replica(self) -> bool:
        return self.advertised.replica is not None


@dataclass(frozen=True, slots=True)
class ResourceSet:
    """One extended resource while it is being built: its name and grants, in advertising order."""

    name: str
    grants: tuple[Grant, ...]
    sharing: str = "none"
    """``none``, ``time-slicing`` or ``mps``: the sharing of its replicas."""
    fail_requests_greater_than_one: bool = False

    @property
    def shared(self) -> bool:
        return any(g.is_replica for g in self.grants)

    @property
    def socket_name(self) -> str:
        return socket_name(self.name)

    def advertised(self) -> AdvertisedResource:
        return AdvertisedResource(
            name=self.name,
            socket_name=self.socket_name,
            devices=tuple(g.advertised for g in self.grants),
            shared=self.shared,
            fail_requests_greater_than_one=self.fail_requests_greater_than_one and self.shared,
        )


class SharingLayout(Protocol):
    """Turns some devices into shared replicas. Layouts run in order over the node's resources.

    To add a sharing strategy (MPS slices, issue 8), implement ``apply`` and return it from
    :func:`sharing_layouts`.
    """

    def apply(self, resources: Mapping[str, ResourceSet], node: Inventory) -> dict[str, ResourceSet]: ...


def socket_name(resource_name: str) -> str:
    """NVIDIA's socket naming: ``nvidia.com/mig-1g.10gb`` → ``nvidia-mig-1g.10gb.sock``."""
    return f"nvidia-{resource_name.split('/', 1)[-1]}.sock"


# --------------------------------------------------------------------------------------------------
# Host facts (the only I/O: read once, when the logic is built)
# --------------------------------------------------------------------------------------------------


def read_numa_node(gpu: GPU, host_root: Path) -> int | None:
    """The GPU's NUMA node from sysfs under ``host_root``; the inventory's value when sysfs has none.

    A value of -1 (no NUMA affinity, common in VMs) means no topology, as in NVIDIA's plugin.
    """
    path = host_root / "sys/bus/pci/devices" / sysfs_bus_id(gpu.pci_bus_id) / "numa_node"
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return gpu.numa_node if gpu.numa_node is None or gpu.numa_node >= 0 else None
    try:
        node = int(text)
    except ValueError:
        return gpu.numa_node
    return node if node >= 0 else None


MigMinors = Mapping[tuple[int, int, int | None], int]
"""``(gpu minor, GPU instance id, compute instance id or None)`` → minor of ``/dev/nvidia-caps/nvidia-capN``."""


def parse_mig_minors(text: str) -> dict[tuple[int, int, int | None], int]:
    """Parse ``/proc/driver/nvidia-caps/mig-minors`` (lines such as ``gpu0/gi1/ci0/access 12``)."""
    out: dict[tuple[int, int, int | None], int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        path, minor = parts[0], int(parts[1])
        segs = path.split("/")
        try:
            if len(segs) == 4 and segs[3] == "access" and segs[0].startswith("gpu"):
                out[(int(segs[0][3:]), int(segs[1][2:]), int(segs[2][2:]))] = minor
            elif len(segs) == 3 and segs[2] == "access" and segs[0].startswith("gpu"):
                out[(int(segs[0][3:]), int(segs[1][2:]), None)] = minor
        except ValueError:
            continue
    return out


def read_mig_minors(host_root: Path) -> dict[tuple[int, int, int | None], int]:
    try:
        return parse_mig_minors((host_root / "proc/driver/nvidia-caps/mig-minors").read_text(errors="replace"))
    except OSError:
        return {}


# --------------------------------------------------------------------------------------------------
# Base devices: whole GPUs and MIG devices, per MIG strategy
# --------------------------------------------------------------------------------------------------


def _gpu_device(gpu: GPU, numa: int | None) -> Device:
    return Device(
        uuid=gpu.uuid,
        index=str(gpu.index),
        gpu_uuid=gpu.uuid,
        gpu_index=gpu.index,
        numa_node=numa,
        device_nodes=(gpu.device_node,),
        memory_mib=gpu.memory_total_mib,
        multiprocessor_count=gpu.multiprocessor_count,
    )


def _mig_device(gpu: GPU, mig: MigDevice, numa: int | None, minors: MigMinors, warnings: list[str]) -> Device:
    nodes = [gpu.device_node]
    gi = minors.get((gpu.minor, mig.gpu_instance_id, None))
    ci = minors.get((gpu.minor, mig.gpu_instance_id, mig.compute_instance_id))
    if gi is not None and ci is not None:
        nodes += [f"/dev/nvidia-caps/nvidia-cap{gi}", f"/dev/nvidia-caps/nvidia-cap{ci}"]
    elif minors:
        warnings.append(
            f"MIG device {mig.uuid} (GPU {gpu.index}, gi {mig.gpu_instance_id}, ci {mig.compute_instance_id}) "
            "has no entry in /proc/driver/nvidia-caps/mig-minors; its capability device nodes are not passed"
        )
    return Device(
        uuid=mig.uuid,
        index=f"{gpu.index}:{mig.index}",
        gpu_uuid=gpu.uuid,
        gpu_index=gpu.index,
        numa_node=numa,
        device_nodes=tuple(nodes),
        mig_profile=mig.profile,
        memory_mib=mig.memory_total_mib,
        multiprocessor_count=mig.multiprocessor_count,
    )


def base_devices(
    inventory: Inventory,
    config: PluginConfig,
    host_root: Path = Path("/"),
    warnings: list[str] | None = None,
) -> dict[str, list[Device]]:
    """Unshared devices per resource name, in GPU index then MIG index order."""
    warnings = [] if warnings is None else warnings
    strategy = config.flags.mig_strategy
    minors = read_mig_minors(host_root) if strategy != "none" else {}
    whole: dict[str, list[Device]] = {}
    migs: dict[str, list[Device]] = {}
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        numa = read_numa_node(gpu, host_root)
        if gpu.mig_enabled:
            if strategy == "none":
                warnings.append(
                    f"GPU {gpu.index} ({gpu.uuid}) is in MIG mode; with mig-strategy none it is not advertised "
                    "(use --mig-strategy single or mixed to advertise its MIG devices)"
                )
                continue
            if not gpu.mig_devices:
                warnings.append(
                    f"GPU {gpu.index} ({gpu.uuid}) is in MIG mode but has no MIG devices; nothing to advertise "
                    "for it until MIG devices are created (nvidia-smi mig -cgi … -C, or nvidia-mig-parted)"
                )
                continue
            for mig in gpu.mig_devices:
                name = _mig_resource(config, mig.profile)
                migs.setdefault(name, []).append(_mig_device(gpu, mig, numa, minors, warnings))
            continue
        whole.setdefault(config.resources.gpu_resource(gpu.name), []).append(_gpu_device(gpu, numa))

    if strategy == "single" and migs:
        profiles: dict[str, list[str]] = {}
        for devices in migs.values():
            for d in devices:
                profiles.setdefault(d.mig_profile or "?", []).append(d.index)
        if len(profiles) > 1:
            found = "; ".join(f"{p} on {', '.join(ix)}" for p, ix in sorted(profiles.items()))
            raise ConfigError(
                "mig-strategy single needs every MIG device on the node to have the same profile, "
                f"but found {found}. Use --mig-strategy mixed, or repartition the GPUs with one profile"
            )
        if whole:
            on = ", ".join(d.index for ds in whole.values() for d in ds)
            raise ConfigError(
                "mig-strategy single needs every GPU on the node in the same MIG mode, but GPU "
                f"{on} is not in MIG mode while others are. Enable MIG on all GPUs or use --mig-strategy mixed"
            )

    out: dict[str, list[Device]] = {}
    for name, devices in (*whole.items(), *migs.items()):
        out.setdefault(name, []).extend(devices)
    return out


def _mig_resource(config: PluginConfig, profile: str) -> str:
    name = config.resources.mig_resource(profile, config.flags.mig_strategy)
    if name is None:
        raise ConfigError(
            f"MIG profile {profile!r} is a compute-instance sub-profile, which mig-strategy mixed has no "
            "default resource for; add a resources.mig entry with pattern "
            f"{profile!r} and a name, or repartition without sub-profiles"
        )
    return name


# --------------------------------------------------------------------------------------------------
# Sharing layouts
# --------------------------------------------------------------------------------------------------


def _grant(device: Device, device_id: str, replica: int | None = None) -> Grant:
    return Grant(
        advertised=AdvertisedDevice(
            id=device_id,
            health_uuids=device.health_uuids,
            gpu_uuid=device.gpu_uuid,
            numa_node=device.numa_node,
            replica=replica,
        ),
        device=device,
    )


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
            chosen_ids = {d.uuid for d in chosen}
            remaining[entry.name] = [g for g in remaining[entry.name] if g.device.uuid not in chosen_ids]
            target = entry.advertised_name
            shared_names.add(target)
            for d in chosen:
                out_grants.setdefault(target, []).extend(
                    _grant(d, f"{d.uuid}::{n}", replica=n) for n in range(entry.replicas)
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
        from kgpu.sharing.paths import MpsPaths
        from kgpu.sharing.plugin import MpsSharingLayout

        layouts.append(MpsSharingLayout(mps, MpsPaths(Path(config.flags.mps_root))))
    return layouts


def build_resources(
    inventory: Inventory,
    config: PluginConfig,
    host_root: Path = Path("/"),
    warnings: list[str] | None = None,
) -> tuple[ResourceSet, ...]:
    """Every resource this node advertises, sorted by name; resources without devices are dropped."""
    base = base_devices(inventory, config, host_root, warnings)
    check_sharing_names(config, inventory)  # the same rule the labels apply (kgpu.config.names)
    resources: dict[str, ResourceSet] = {
        name: ResourceSet(name=name, grants=tuple(_grant(d, d.uuid) for d in devices))
        for name, devices in base.items()
    }
    for layout in sharing_layouts(config):
        resources = layout.apply(resources, inventory)
    return tuple(sorted((r for r in resources.values() if r.grants), key=lambda r: r.name))


def build_logic(inventory: Inventory, config: PluginConfig, host_root: Path = Path("/")) -> GPUResources:
    """The device plugin's decisions for this node: what to advertise, how to allocate and prefer.

    Reads the host once (NUMA nodes from sysfs, MIG capability minors, device nodes, driver files
    for ``driver-mounts``) under ``host_root``; afterwards every call is pure and never blocks.
    Raises :class:`ConfigError` for a config that does not fit this node.
    """
    from kgpu.deviceplugin.allocate import read_host_facts
    from kgpu.deviceplugin.logic import GPUResources

    warnings: list[str] = []
    resources = build_resources(inventory, config, host_root, warnings)
    facts = read_host_facts(config, host_root, warnings)
    return GPUResources(resources=resources, config=config, inventory=inventory, facts=facts, warnings=warnings)


def allocation_extras(grants: Sequence[Grant]) -> ContainerAllocation:
    """Envs and mounts that the grants themselves carry (e.g. MPS limits), merged in request order."""
    if any(g.mps is not None for g in grants):
        from kgpu.sharing.plugin import mps_extras

        return mps_extras(grants)
    envs: dict[str, str] = {}
    mounts: list[Mount] = []
    for g in grants:
        envs.update(g.envs)
        mounts.extend(m for m in g.mounts if m not in mounts)
    return ContainerAllocation(envs=envs, mounts=tuple(mounts))
