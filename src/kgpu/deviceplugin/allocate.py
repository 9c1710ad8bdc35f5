"""What a container gets for the device IDs the kubelet allocated: env, mounts, device nodes, CDI.

The response follows NVIDIA's ``internal/plugin/server.go`` for each device list strategy:

* ``envvar``: ``NVIDIA_VISIBLE_DEVICES=<id>,<id>`` (UUIDs, or indexes with ``deviceIDStrategy: index``);
* ``volume-mounts``: ``/dev/null`` mounted at ``/var/run/nvidia-container-devices/<id>`` per device and
  ``NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices``;
* ``cdi-annotations``: ``cdi.k8s.io/nvidia-device-plugin_<response uuid>: nvidia.com/gpu=<id>,…``;
* ``cdi-cri``: the same fully-qualified names in the CRI ``cdi_devices`` field;
* ``passDeviceSpecs``: ``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``,
  ``/dev/nvidia-modeset`` (those that exist) and each device's nodes (``/dev/nvidiaN``, MIG
  capability nodes), host paths under the device root.

When every strategy is a CDI one, nothing else is added (as NVIDIA does). kgpu's own
``driver-mounts`` needs no container toolkit: the device nodes as DeviceSpecs, the driver's
libraries and binaries bind-mounted read-only at ``/usr/local/nvidia/lib64`` and
``/usr/local/nvidia/bin``, and ``LD_LIBRARY_PATH`` / ``PATH`` pointing there — a GPU pod then runs on
a stock containerd/runc, as on GKE.

A shared replica (``<uuid>::<n>``) names its physical device once, however many replicas of it
a container holds.

Paths in a response are *host* paths (the kubelet and runtime resolve them on the host): the one
driver root (:class:`kgpu.config.DriverRoot`) says where the driver lives on the host and where the
plugin reads it (``containerDriverRoot``, ``/driver-root``, when that is mounted, as in NVIDIA's
DaemonSet). ``driver-mounts`` without driver files refuses to start (:class:`NoDriverFiles`).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kgpu.config import DRIVER_MOUNTS, DriverRoot, PluginConfig, resolve_driver_root
from kgpu.deviceplugin.plan import AllocationError, ContainerAllocation, DeviceNode, Mount
from kgpu.deviceplugin.resources import (
    CONTROL_DEVICE_NODES,
    Device,
    Grant,
    ResourceSet,
    allocation_extras,
)
from kgpu.errors import ConfigError
from kgpu.host.driverfiles import discover_driver_files
from kgpu.host.driverroot import CUDA_SONAME, NVML_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_library

DEVICE_LIST_ENV = "NVIDIA_VISIBLE_DEVICES"
VOLUME_MOUNTS_HOST_PATH = "/dev/null"
VOLUME_MOUNTS_CONTAINER_ROOT = "/var/run/nvidia-container-devices"
CDI_KIND = "nvidia.com/gpu"
"""The CDI kind of the devices named in annotations and ``cdi_devices`` (``kgpu cdi generate`` writes it)."""
CDI_PLUGIN_NAME = "nvidia-device-plugin"
CONTAINER_LIB_DIR = "/usr/local/nvidia/lib64"
CONTAINER_BIN_DIR = "/usr/local/nvidia/bin"
DRIVER_MOUNTS_PATH = (
    f"{CONTAINER_BIN_DIR}:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
"""``PATH`` for driver-mounts: CUDA images' default PATH with the mounted driver binaries first."""
IMEX_CHANNEL_ENV = "NVIDIA_IMEX_CHANNELS"


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What allocation needs to know about the host, read once when the plugin starts."""

    dev_root: str = "/"
    """Root of the device nodes on the host (DeviceSpec host paths are joined to it)."""
    control_nodes: tuple[str, ...] = CONTROL_DEVICE_NODES[:3]
    """Which of ``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ... exist on the host."""
    driver_mounts: tuple[Mount, ...] = ()
    """Driver libraries and binaries for the ``driver-mounts`` strategy (host path → container path)."""
    imex_channels: tuple[str, ...] = ()
    """IMEX channel device nodes that exist (``/dev/nvidia-caps-imex-channels/channel0``)."""


REQUIRED_CONTROL_NODES = CONTROL_DEVICE_NODES[:3]
"""Assumed present when the plugin cannot see the host's device nodes (no toolkit, /dev not mounted)."""


class NoDriverFiles(ConfigError):
    """A list strategy needs the driver's files (driver-mounts), and the driver root has none: the
    containers the plugin would admit could not run CUDA, so it does not advertise devices."""


def driver_root_seen(config: PluginConfig, host_root: Path = Path("/")) -> DriverRoot:
    """The one driver root (:attr:`PluginConfig.driver_root`), or, when the host's tree is read under
    ``host_root`` (tests, a host mounted elsewhere), the same host path under it."""
    if host_root == Path("/"):
        return config.driver_root
    return resolve_driver_root(config.driver_root.host, host_root=host_root)


def driver_file_mounts(root: DriverRoot) -> tuple[Mount, ...]:
    """Read-only mounts of the driver's libraries (and their soname links) and binaries.

    Each library file is mounted under its own name and under every soname link that points at
    it (``libcuda.so.1`` → the ``libcuda.so.580.95.05`` file), so the dynamic loader finds it
    without ``ldconfig`` in the container. Files are found where this process sees the driver
    (``root.view``); the mounts name them as the host does (under ``root.host``).
    """
    files = discover_driver_files(root.view)
    mounts: list[Mount] = []
    for lib in files.libraries:
        mounts.append(Mount(f"{CONTAINER_LIB_DIR}/{lib.name}", root.host_path(lib), read_only=True))
    by_name = {lib.name: lib for lib in files.libraries}
    for link in files.library_links:
        target = by_name.get(link.target)
        if target is not None:
            mounts.append(Mount(f"{CONTAINER_LIB_DIR}/{link.path.name}", root.host_path(target), read_only=True))
    for binary in files.binaries:
        real = binary.resolve()
        host = root.host_path(real if _inside(real, root.view) else binary)
        mounts.append(Mount(f"{CONTAINER_BIN_DIR}/{binary.name}", host, read_only=True))
    return tuple(mounts)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def no_driver_files(root: DriverRoot, host_root: Path = Path("/")) -> NoDriverFiles:
    """The one line saying the driver root has no driver, and where one is (a well-known root) if any."""
    where = f"{root.view}" if str(root.view) == root.host else f"{root.view} (the host's {root.host})"
    found = next((r for r in WELL_KNOWN_DRIVER_ROOTS if str(r) != root.host
                  and find_library(host_root / str(r).lstrip("/"), NVML_SONAME) is not None), None)
    fix = (f"the driver is under {found}: run with --driver-root {found}" if found is not None else
           "give --driver-root the directory the driver is installed in on the host (/, /run/nvidia/driver, "
           "/usr/local/nvidia) and, in a container, mount it at /driver-root")
    return NoDriverFiles(
        f"device list strategy {DRIVER_MOUNTS} needs the NVIDIA driver's libraries, but there is no "
        f"{NVML_SONAME} or {CUDA_SONAME} under {where}; {fix}"
    )


def read_host_facts(
    config: PluginConfig, host_root: Path = Path("/"), warnings: list[str] | None = None
) -> HostFacts:
    """Device nodes and driver files on the host, as the plugin sees them (see :func:`driver_root_seen`).

    Raises :class:`NoDriverFiles` when ``driver-mounts`` finds no driver library under the driver root.
    """
    warnings = [] if warnings is None else warnings
    flags = config.flags
    root = driver_root_seen(config, host_root)
    driver_root, view = root.host, root.view
    if driver_root == flags.plugin.container_driver_root and driver_root != "/":
        warnings.append(
            f"nvidiaDriverRoot is {driver_root!r}, the plugin container's own mount point; it must be the "
            "driver root's path on the host (e.g. /run/nvidia/driver), which the kubelet resolves device and "
            "driver paths against"
        )
    # Device nodes: nvidiaDevRoot, else the driver root when it holds dev/ (a driver container), else /.
    if flags.nvidia_dev_root:
        dev_root = flags.nvidia_dev_root
        dev_view = view if dev_root == driver_root else host_root / dev_root.lstrip("/")
    elif driver_root != "/" and (view / "dev/nvidiactl").exists():
        dev_root, dev_view = driver_root, view
    else:
        dev_root, dev_view = "/", host_root
    control = tuple(p for p in CONTROL_DEVICE_NODES if (dev_view / p.lstrip("/")).exists())
    if not control:
        control = REQUIRED_CONTROL_NODES
        if flags.plugin.pass_device_specs or flags.plugin.uses(DRIVER_MOUNTS):
            warnings.append(
                f"cannot see {dev_view / 'dev/nvidiactl'}; passing {', '.join(control)} without checking they "
                "exist (load nvidia-uvm on the host, or mount the host's /dev into the plugin to check)"
            )
    mounts: tuple[Mount, ...] = ()
    if flags.plugin.uses(DRIVER_MOUNTS):
        mounts = driver_file_mounts(root)
        if not any(m.container_path.startswith(CONTAINER_LIB_DIR) for m in mounts):
            raise no_driver_files(root, host_root)
    channels = tuple(
        f"/dev/nvidia-caps-imex-channels/channel{c}"
        for c in config.imex.channel_ids
        if (dev_view / f"dev/nvidia-caps-imex-channels/channel{c}").exists() or config.imex.required
    )
    return HostFacts(dev_root=dev_root, control_nodes=control, driver_mounts=mounts, imex_channels=channels)


def _join(root: str, path: str) -> str:
    return path if root in ("", "/") else root.rstrip("/") + path


def _device_specs(devices: Sequence[Device], facts: HostFacts) -> list[DeviceNode]:
    paths = list(facts.control_nodes)
    for d in devices:
        paths.extend(p for p in d.device_nodes if p not in paths)
    paths.extend(p for p in facts.imex_channels if p not in paths)
    return [DeviceNode(container_path=p, host_path=_join(facts.dev_root, p), permissions="rw") for p in paths]


def cdi_annotation_key(prefix: str, response_id: str) -> str:
    """CDI's ``annotations.Key``: ``<prefix><plugin>_<id>``; the name part must be ≤ 63 characters."""
    name = f"{CDI_PLUGIN_NAME}_{response_id.replace('/', '_')}"
    if len(name) > 63:
        raise AllocationError(f"CDI annotation name {name!r} is longer than 63 characters")
    return prefix + name


def check_request(resource: ResourceSet, device_ids: Sequence[str]) -> list[Grant]:
    """The grants behind ``device_ids``, refusing unknown IDs and too many shared replicas."""
    if not device_ids:
        raise AllocationError(f"invalid allocation request for {resource.name!r}: no device IDs")
    by_id = {g.id: g for g in resource.grants}
    grants: list[Grant] = []
    for device_id in dict.fromkeys(device_ids):
        grant = by_id.get(device_id)
        if grant is None:
            raise AllocationError(
                f"invalid allocation request for {resource.name!r}: unknown device {device_id!r} "
                f"(this node advertises {len(by_id)} {resource.name} devices)"
            )
        grants.append(grant)
    if resource.fail_requests_greater_than_one and len(grants) > 1 and any(g.is_replica for g in grants):
        raise AllocationError(
            f"request for {len(grants)} {resource.name} devices refused: these are shared replicas and "
            f"sharing.{'mps' if resource.sharing == 'mps' else 'timeSlicing'}.failRequestsGreaterThanOne is true, "
            "so a container may request at most 1 "
            "(more replicas would not give it more GPU); request 1, or set failRequestsGreaterThanOne: false"
        )
    return grants


def plan_allocation(
    resource: ResourceSet,
    device_ids: Sequence[str],
    config: PluginConfig,
    facts: HostFacts,
    response_id: Callable[[], str] = lambda: str(uuidlib.uuid4()),
) -> ContainerAllocation:
    """One container's response for ``device_ids`` of ``resource``; AllocationError for a bad request."""
    grants = check_request(resource, device_ids)
    devices = list(dict.fromkeys(g.device for g in grants))
    plugin = config.flags.plugin
    ids = [d.index if plugin.device_id_strategy == "index" else d.uuid for d in devices]

    extras = allocation_extras(grants)
    envs: dict[str, str] = {}
    mounts: list[Mount] = []
    specs: list[DeviceNode] = []
    annotations: dict[str, str] = {}
    cdi_devices: list[str] = []

    if plugin.any_cdi:
        names = [f"{CDI_KIND}={i}" for i in ids]
        if plugin.uses("cdi-annotations"):
            annotations[cdi_annotation_key(plugin.cdi_annotation_prefix, response_id())] = ",".join(names)
        if plugin.uses("cdi-cri"):
            cdi_devices.extend(names)
    envs.update(extras.envs)
    mounts.extend(extras.mounts)
    # As NVIDIA's server.go: these are set whatever the list strategy, CDI ones included.
    for enabled, name in ((config.flags.gdrcopy_enabled, "NVIDIA_GDRCOPY"), (config.flags.gds_enabled, "NVIDIA_GDS"),
                          (config.flags.mofed_enabled, "NVIDIA_MOFED")):
        if enabled:
            envs[name] = "enabled"

    if not plugin.all_cdi:
        if plugin.uses("envvar"):
            envs[DEVICE_LIST_ENV] = ",".join(ids)
            if facts.imex_channels:
                envs[IMEX_CHANNEL_ENV] = ",".join(p.rsplit("channel", 1)[-1] for p in facts.imex_channels)
        if plugin.uses("volume-mounts"):
            envs[DEVICE_LIST_ENV] = VOLUME_MOUNTS_CONTAINER_ROOT
            mounts.extend(
                Mount(f"{VOLUME_MOUNTS_CONTAINER_ROOT}/{i}", VOLUME_MOUNTS_HOST_PATH, read_only=False) for i in ids
            )
            mounts.extend(
                Mount(
                    f"{VOLUME_MOUNTS_CONTAINER_ROOT}/imex/{p.rsplit('channel', 1)[-1]}",
                    VOLUME_MOUNTS_HOST_PATH,
                    read_only=False,
                )
                for p in facts.imex_channels
            )
        if plugin.pass_device_specs or plugin.uses(DRIVER_MOUNTS):
            specs.extend(_device_specs(devices, facts))
        if plugin.uses(DRIVER_MOUNTS):
            mounts.extend(m for m in facts.driver_mounts if m not in mounts)
            envs["LD_LIBRARY_PATH"] = CONTAINER_LIB_DIR
            envs["PATH"] = DRIVER_MOUNTS_PATH
            # Without a toolkit list strategy, keep a toolkit runtime (if one is the default) from
            # reading a CUDA image's NVIDIA_VISIBLE_DEVICES=all and exposing every GPU.
            envs.setdefault(DEVICE_LIST_ENV, "void")

    return ContainerAllocation(
        envs=envs,
        mounts=tuple(mounts),
        devices=tuple(specs),
        annotations=annotations,
        cdi_devices=tuple(cdi_devices),
    )
