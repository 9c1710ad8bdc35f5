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

Paths in a response are *host* paths (the kubelet and runtime resolve them on the host). Pure:
what the host holds (device nodes, driver files, IMEX channels) comes in as :class:`HostFacts`, read
once by :mod:`kgpu.deviceplugin.hostfacts`.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kgpu.config.values import DRIVER_MOUNTS, PluginConfig
from kgpu.container import AllocationError, ContainerAllocation, DeviceNode, Mount
from kgpu.deviceplugin.devices import CONTROL_DEVICE_NODES, Device, Grant, MigMinors, ResourceSet
from kgpu.deviceplugin.mps import mps_extras

DEVICE_LIST_ENV = "NVIDIA_VISIBLE_DEVICES"
VOLUME_MOUNTS_HOST_PATH = "/dev/null"
VOLUME_MOUNTS_CONTAINER_ROOT = "/var/run/nvidia-container-devices"
CDI_VENDOR = "nvidia.com"
CDI_KIND = f"{CDI_VENDOR}/gpu"
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
    mig_minors: MigMinors = field(default_factory=dict)
    """The driver's MIG capability minors (``/proc/driver/nvidia-caps/mig-minors``)."""
    warnings: tuple[str, ...] = ()
    """What an admin should know about the host (missing device nodes or driver files)."""


REQUIRED_CONTROL_NODES = CONTROL_DEVICE_NODES[:3]
"""Assumed present when the plugin cannot see the host's device nodes (no toolkit, /dev not mounted)."""


def join_root(root: str, path: str) -> str:
    """``path`` under ``root`` on the host (``/`` leaves it as it is)."""
    return path if root in ("", "/") else root.rstrip("/") + path


def _device_specs(devices: Sequence[Device], facts: HostFacts) -> list[DeviceNode]:
    paths = list(facts.control_nodes)
    for d in devices:
        paths.extend(p for p in d.device_nodes if p not in paths)
    paths.extend(p for p in facts.imex_channels if p not in paths)
    return [DeviceNode(container_path=p, host_path=join_root(facts.dev_root, p), permissions="rw") for p in paths]


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


def allocation_extras(grants: Sequence[Grant]) -> ContainerAllocation:
    """Envs and mounts that the grants themselves carry (e.g. MPS limits), merged in request order."""
    if any(g.mps is not None for g in grants):
        return mps_extras(grants)
    envs: dict[str, str] = {}
    mounts: list[Mount] = []
    for g in grants:
        envs.update(g.envs)
        mounts.extend(m for m in g.mounts if m not in mounts)
    return ContainerAllocation(envs=envs, mounts=tuple(mounts))


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
        # As NVIDIA's updateResponseForCDI: then the IMEX channels, then GDS and MOFED when enabled, by their CDI
        # names (the plugin checked at start that the node's specs have these kinds: hostfacts.check_cdi_specs).
        names += [f"{CDI_VENDOR}/imex-channel={p.rsplit('channel', 1)[-1]}" for p in facts.imex_channels]
        names += [f"{CDI_VENDOR}/{kind}=all" for enabled, kind in ((config.flags.gds_enabled, "gds"),
                                                                  (config.flags.mofed_enabled, "mofed")) if enabled]
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
