"""The devices a node can advertise: whole GPUs and MIG devices, per MIG strategy (pure).

Follows NVIDIA's ``internal/rm`` device map: whole GPUs go to the first ``resources.gpus`` pattern
matching the product name (default ``nvidia.com/gpu``). MIG devices, under MIG strategy ``single``,
go to ``nvidia.com/gpu`` (all MIG devices must share one profile); under ``mixed`` to
``nvidia.com/mig-<profile>`` (or the first ``resources.mig`` pattern). A GPU in MIG mode is never
advertised whole. Sharing (:mod:`~kgpu.deviceplugin.replicas`, :mod:`~kgpu.deviceplugin.mps`) then
turns some devices into replicas.

Device IDs the kubelet sees are UUIDs (``GPU-…``, ``MIG-…``) or ``<uuid>::<n>``, as NVIDIA's
plugin advertises them whatever the device-ID strategy; ``deviceIDStrategy`` decides how the
devices are named *to the container runtime* (see :mod:`kgpu.deviceplugin.allocate`).

Example::

    base_devices(inventory, config, mig_minors={})   # {"nvidia.com/gpu": [Device(...), ...]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kgpu.config.values import PluginConfig
from kgpu.container import Mount
from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, Inventory, MigDevice

if TYPE_CHECKING:
    from kgpu.sharing.layout import MpsSlice

CONTROL_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
"""Device nodes every container with a GPU needs, added when they exist (NVIDIA's GetDevicePaths)."""


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


def socket_name(resource_name: str) -> str:
    """NVIDIA's socket naming: ``nvidia.com/mig-1g.10gb`` → ``nvidia-mig-1g.10gb.sock``."""
    return f"nvidia-{resource_name.split('/', 1)[-1]}.sock"


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
    mig_minors: MigMinors,
    warnings: list[str] | None = None,
) -> dict[str, list[Device]]:
    """Unshared devices per resource name, in GPU index then MIG index order.

    ``mig_minors`` is the driver's table of MIG capability device minors (read once by
    :mod:`kgpu.deviceplugin.hostfacts`); NUMA nodes come from the inventory.
    """
    warnings = [] if warnings is None else warnings
    strategy = config.flags.mig_strategy
    minors = mig_minors if strategy != "none" else {}
    whole: dict[str, list[Device]] = {}
    migs: dict[str, list[Device]] = {}
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        numa = gpu.numa_node if gpu.numa_node is not None and gpu.numa_node >= 0 else None
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


def grant(device: Device, device_id: str, replica: int | None = None) -> Grant:
    """The grant of ``device`` under ``device_id`` (itself, or replica ``replica`` of it)."""
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
