"""The resolved configuration as plain frozen values: what every component reads.

These mirror NVIDIA's ``api/config/v1`` types (``Config``, ``Flags``, ``Resources``, ``Sharing``,
``Imex``) plus kgpu's additions (MPS slices, the ``driver-mounts`` list strategy, the resolved
driver root). They are built by :func:`kgpu.config.resolve_config` from the command line, the
environment and the file; nothing here reads a file or knows the file's format.

Example::

    config = PluginConfig()                 # NVIDIA's defaults
    config.flags.plugin.device_list_strategy   # ('envvar',)
    config.sharing.strategy                 # 'none'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from kgpu.config.duration import format_duration

VERSION: Final = "v1"
RESOURCE_NAME_PREFIX: Final = "nvidia.com"
SHARED_SUFFIX: Final = ".shared"
MAX_RESOURCE_NAME_LENGTH: Final = 63
DEFAULT_GPU_RESOURCE: Final = "nvidia.com/gpu"

MIG_STRATEGIES = ("none", "single", "mixed")
DEVICE_ID_STRATEGIES = ("uuid", "index")
NVIDIA_DEVICE_LIST_STRATEGIES = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
DRIVER_MOUNTS: Final = "driver-mounts"
"""kgpu's own device list strategy: device nodes, driver libraries and binaries, no container toolkit."""
DEVICE_LIST_STRATEGIES = (*NVIDIA_DEVICE_LIST_STRATEGIES, DRIVER_MOUNTS)
ALLOCATION_POLICIES = ("distributed", "packed", "spread")
"""NVIDIA's two policies and kgpu's ``spread`` (as many distinct GPUs as possible)."""
DEVICE_DISCOVERY_STRATEGIES = ("auto", "nvml", "tegra", "vfio")
"""Every value NVIDIA's plugin (auto, nvml, tegra) or GFD (also vfio) accepts; kgpu serves auto and nvml."""
SUPPORTED_DISCOVERY_STRATEGIES = ("auto", "nvml")
SHARING_STRATEGIES = ("none", "time-slicing", "mps")

DEFAULT_CDI_ANNOTATION_PREFIX: Final = "cdi.k8s.io/"
DEFAULT_NVIDIA_CTK_PATH: Final = "/usr/bin/nvidia-ctk"
DEFAULT_CONTAINER_DRIVER_ROOT: Final = "/driver-root"
DEFAULT_KUBELET_SOCKET: Final = "/var/lib/kubelet/device-plugins/kubelet.sock"
DEFAULT_MPS_ROOT: Final = "/run/kgpu/mps"
DEFAULT_DEVICE_PLUGIN_STATE_FILE: Final = "/run/kgpu/device-plugin/state.json"
"""Where the device plugin writes, and the exporter, the DRA plugin and validate read, its state file."""
DEFAULT_POD_RESOURCES_SOCKET: Final = "/var/lib/kubelet/pod-resources/kubelet.sock"
"""kgpu's MPS daemons keep their pipes here (NVIDIA's plugin has no default; its chart uses /run/nvidia/mps)."""
DEFAULT_GFD_OUTPUT_FILE: Final = "/etc/kubernetes/node-feature-discovery/features.d/gfd"
DEFAULT_MACHINE_TYPE_FILE: Final = "/sys/class/dmi/id/product_name"
DEFAULT_SLEEP_INTERVAL: Final = 60.0
INFINITE: Final = math.inf
"""GFD's ``sleepInterval: infinite``: label once, then sleep until stopped."""

MigStrategy = Literal["none", "single", "mixed"]
DeviceIDStrategy = Literal["uuid", "index"]
DeviceListStrategy = Literal["envvar", "volume-mounts", "cdi-annotations", "cdi-cri", "driver-mounts"]
AllocationPolicy = Literal["distributed", "packed", "spread"]
DeviceDiscoveryStrategy = Literal["auto", "nvml", "tegra", "vfio"]
SharingStrategy = Literal["none", "time-slicing", "mps"]


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """NVIDIA's ``wildCardToRegexp``: ``*`` matches anything, the rest literally, anchored at both ends."""
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PluginFlags:
    """``flags.plugin``: settings of the kubelet plugin itself."""

    pass_device_specs: bool = False
    device_list_strategy: tuple[DeviceListStrategy, ...] = ("envvar",)
    device_id_strategy: DeviceIDStrategy = "uuid"
    cdi_annotation_prefix: str = DEFAULT_CDI_ANNOTATION_PREFIX
    nvidia_ctk_path: str = DEFAULT_NVIDIA_CTK_PATH
    container_driver_root: str = DEFAULT_CONTAINER_DRIVER_ROOT
    shared_devices_allocation_policy: AllocationPolicy = "distributed"
    kubelet_socket: str = DEFAULT_KUBELET_SOCKET
    """NVIDIA's ``--kubelet-socket``: the kubelet's registration socket; its directory holds the plugin's."""
    cdi_feature_flags: tuple[str, ...] = ()
    cdi_disable_hooks: tuple[str, ...] = ()

    def uses(self, strategy: DeviceListStrategy) -> bool:
        return strategy in self.device_list_strategy

    @property
    def any_cdi(self) -> bool:
        return any(s.startswith("cdi-") for s in self.device_list_strategy)

    @property
    def all_cdi(self) -> bool:
        """Every strategy is a CDI one (NVIDIA then adds no env, mounts or device specs)."""
        return all(s.startswith("cdi-") for s in self.device_list_strategy)

    @property
    def kubelet_dir(self) -> Path:
        return Path(self.kubelet_socket).parent


@dataclass(frozen=True, slots=True)
class GfdFlags:
    """``flags.gfd``: gpu-feature-discovery's settings (kgpu's labeler)."""

    oneshot: bool = False
    no_timestamp: bool = False
    sleep_interval: float = DEFAULT_SLEEP_INTERVAL
    """Seconds between labelling runs; :data:`INFINITE` labels once and then waits."""
    output_file: str = DEFAULT_GFD_OUTPUT_FILE
    machine_type_file: str = DEFAULT_MACHINE_TYPE_FILE


@dataclass(frozen=True, slots=True)
class Flags:
    """``flags``: the settings NVIDIA also takes as command-line flags and environment variables."""

    mig_strategy: MigStrategy = "none"
    fail_on_init_error: bool = True
    nvidia_driver_root: str = "/"
    nvidia_dev_root: str | None = None
    """Where device nodes live on the host; defaults to the driver root (see :attr:`dev_root`)."""
    mps_root: str = DEFAULT_MPS_ROOT
    gdrcopy_enabled: bool = False
    gds_enabled: bool = False
    mofed_enabled: bool = False
    use_node_feature_api: bool = False
    device_discovery_strategy: DeviceDiscoveryStrategy = "auto"
    plugin: PluginFlags = field(default_factory=PluginFlags)
    gfd: GfdFlags = field(default_factory=GfdFlags)

    @property
    def dev_root(self) -> str:
        return self.nvidia_dev_root or self.nvidia_driver_root


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    """One ``resources.gpus`` / ``resources.mig`` entry: devices whose name matches go to ``name``."""

    pattern: str
    """A GPU product name (``NVIDIA H100*``) or MIG profile (``1g.10gb``); ``*`` matches anything."""
    name: str
    """Fully-qualified resource name, e.g. ``nvidia.com/h100``."""

    def matches(self, text: str) -> bool:
        # Anchored, as NVIDIA's ResourcePattern.Matches: '1g.24gb' does not match '1g.24gb-me'.
        return wildcard_regex(self.pattern).match(text) is not None


def mig_resource_name(profile: str) -> str:
    """``1g.10gb`` → ``nvidia.com/mig-1g.10gb``; ``1g.10gb+me`` → ``nvidia.com/mig-1g.10gb.me`` (NVIDIA's form)."""
    return f"{RESOURCE_NAME_PREFIX}/mig-{profile.replace('+', '.')}"


def is_full_profile(profile: str) -> bool:
    """NVIDIA only makes default mixed-strategy resources for profiles whose compute instance is the
    whole GPU instance (``1g.10gb``), not for compute-instance sub-profiles (``1c.2g.20gb``)."""
    return not profile.split(".", 1)[0].endswith("c")


@dataclass(frozen=True, slots=True)
class Resources:
    """``resources``: which resource name each device is advertised under (kgpu honours the renames)."""

    gpus: tuple[ResourcePattern, ...] = ()
    mig: tuple[ResourcePattern, ...] = ()

    def gpu_resource(self, product: str) -> str:
        """The resource a whole GPU of this product is advertised as: the first ``resources.gpus`` pattern
        that matches its name, else ``nvidia.com/gpu``."""
        return next((p.name for p in self.gpus if p.matches(product)), DEFAULT_GPU_RESOURCE)

    def mig_resource(self, profile: str, strategy: str) -> str | None:
        """The resource a MIG device of ``profile`` is advertised as under ``strategy``: a ``resources.mig``
        rename, else ``nvidia.com/gpu`` (single) or ``nvidia.com/mig-<profile>`` (mixed); None for a
        compute-instance sub-profile that mixed has no default name for."""
        renamed = next((p.name for p in self.mig if p.matches(profile)), None)
        if renamed is not None:
            return renamed
        if strategy == "single":
            return DEFAULT_GPU_RESOURCE
        return mig_resource_name(profile) if is_full_profile(profile) else None


@dataclass(frozen=True, slots=True)
class DeviceSelector:
    """Which devices an entry applies to: all of them, the first ``count``, or those in ``refs``."""

    all: bool = False
    count: int | None = None
    refs: tuple[str, ...] = ()
    """GPU indexes (``"0"``), MIG indexes (``"0:1"``), GPU or MIG UUIDs."""

    @classmethod
    def every(cls) -> DeviceSelector:
        """NVIDIA's default, ``devices: all``."""
        return cls(all=True)

    def describe(self) -> str:
        if self.all:
            return "all"
        if self.count is not None:
            return f"first {self.count}"
        return "[" + ", ".join(self.refs) + "]"


@dataclass(frozen=True, slots=True)
class ReplicatedResource:
    """One entry of ``sharing.timeSlicing.resources``."""

    name: str
    """The resource whose devices are shared, fully qualified (``nvidia.com/gpu``), as advertised before sharing."""
    replicas: int
    rename: str | None = None
    """Resource name the replicas are advertised under; ``None`` keeps ``name``."""
    devices: DeviceSelector = field(default_factory=DeviceSelector.every)

    @property
    def advertised_name(self) -> str:
        return self.rename or self.name


@dataclass(frozen=True, slots=True)
class ReplicatedResources:
    """``sharing.timeSlicing``: how many replicas each device is split into."""

    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    resources: tuple[ReplicatedResource, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicaResource:
    """One ``sharing.mps.resources`` entry: NVIDIA's equal MPS replicas of whole GPUs."""

    name: str
    """Resource name as advertised (after ``rename`` / ``renameByDefault``)."""
    replicas: int
    devices: DeviceSelector
    source: str = DEFAULT_GPU_RESOURCE
    """The resource whose GPUs are shared (``nvidia.com/gpu``, or a ``resources.gpus`` rename)."""


@dataclass(frozen=True, slots=True)
class SliceSpec:
    """kgpu's heterogeneous MPS slice: ``count`` slices of ``memory_mib`` and ``compute_percent`` per GPU."""

    name: str
    memory_mib: int
    compute_percent: int
    count: int
    devices: DeviceSelector
    memory_text: str
    """The memory as the admin wrote it, for messages."""


DEFAULT_DYNAMIC_SHARES = 10
"""HAMi's ``deviceSplitCount`` default: containers one dynamically shared GPU serves at once."""


@dataclass(frozen=True, slots=True)
class DynamicShares:
    """``sharing.mps.dynamic``: GPUs whose shares are carved out per pod by kgpu-scheduler (HAMi's requests)."""

    devices: DeviceSelector
    shares: int
    """The most containers one GPU serves at once: its count of ``nvidia.com/gpu`` device IDs."""


@dataclass(frozen=True, slots=True)
class MpsConfig:
    """``sharing.mps`` as plain values. ``enabled`` is False when nothing is shared through MPS."""

    resources: tuple[ReplicaResource, ...] = ()
    slices: tuple[SliceSpec, ...] = ()
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = True
    """NVIDIA keeps MPS's historical behaviour: true unless the file says false."""
    allow_compute_oversubscription: bool = False
    source: str = "<config>"
    dynamic: DynamicShares | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.resources or self.slices or self.dynamic)


@dataclass(frozen=True, slots=True)
class Sharing:
    time_slicing: ReplicatedResources | None = None
    mps: MpsConfig | None = None
    """``sharing.mps``: NVIDIA's equal replicas and kgpu's heterogeneous slices (see :mod:`kgpu.sharing`)."""

    @property
    def strategy(self) -> SharingStrategy:
        """The active sharing strategy, as NVIDIA's ``nvidia.com/gpu.sharing-strategy`` label spells it."""
        if self.mps is not None and self.mps.enabled:
            return "mps"
        if self.time_slicing is not None and self.time_slicing.resources:
            return "time-slicing"
        return "none"


@dataclass(frozen=True, slots=True)
class Imex:
    channel_ids: tuple[int, ...] = ()
    required: bool = False


@dataclass(frozen=True, slots=True)
class Health:
    """``health``: which device events count as failures (NVIDIA's newer config block)."""

    disabled: bool = False
    event_types: tuple[str, ...] = ()
    ignored_xids: tuple[int, ...] = ()
    critical_xids: Literal["all"] | tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class DriverRoot:
    """The one NVIDIA driver root: where it is on the host, and where this process reads it.

    ``host`` is NVIDIA's ``nvidiaDriverRoot`` (``--driver-root``, ``NVIDIA_DRIVER_ROOT``): paths handed to
    the kubelet, the container runtime or a CDI spec are under it. ``view`` is the same tree as this
    process sees it: NVIDIA's ``containerDriverRoot`` (``/driver-root``) when that is mounted, else the
    host path itself (the process runs on the host), or under ``--root`` for commands that read a
    host tree mounted elsewhere. ``explicit`` is False when nobody named a driver root, so loaders
    may also look in the well-known places (``/usr/local/nvidia``, ``/run/nvidia/driver``, …).
    """

    host: str = "/"
    view: Path = Path("/")
    explicit: bool = False

    def host_path(self, seen: Path) -> str:
        """``seen`` (a path under :attr:`view`) as the host names it."""
        try:
            rel = seen.relative_to(self.view)
        except ValueError:
            return str(seen)
        if str(rel) == ".":
            return self.host
        return ("" if self.host in ("", "/") else self.host.rstrip("/")) + "/" + str(rel)

    def seen(self, host_path: str) -> Path:
        """``host_path`` (under :attr:`host`) as this process reads it."""
        base = self.host.rstrip("/")
        rel = host_path[len(base):] if base and host_path.startswith(base + "/") else host_path
        return self.view / rel.lstrip("/")


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """The resolved configuration: file, environment and flags merged, every value validated."""

    version: str = VERSION
    flags: Flags = field(default_factory=Flags)
    resources: Resources = field(default_factory=Resources)
    sharing: Sharing = field(default_factory=Sharing)
    imex: Imex = field(default_factory=Imex)
    health: Health | None = None
    driver_root: DriverRoot = field(default_factory=DriverRoot)
    """The driver root resolved once (:func:`kgpu.config.resolve_driver_root`)."""
    config_file: str | None = None
    """The file the settings came from, if any (for log lines and error messages)."""

    def to_dict(self) -> dict[str, Any]:
        """The configuration in NVIDIA's file shape (camelCase keys), e.g. to log it at start-up."""
        out: dict[str, Any] = _to_camel_dict(self)
        return out


_CAMEL_EXCEPTIONS = {
    "nvidia_ctk_path": "nvidiaCTKPath",
    "device_id_strategy": "deviceIDStrategy",
    "use_node_feature_api": "useNodeFeatureAPI",
    "gdrcopy_enabled": "gdrcopyEnabled",
    "mofed_enabled": "mofedEnabled",
    "channel_ids": "channelIDs",
    "ignored_xids": "ignoredXIDs",
    "critical_xids": "criticalXIDs",
}
_NOT_LOGGED = {"config_file", "driver_root", "source", "memory_text"}


def _to_camel_dict(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_camel_dict(v) for v in value]
    if isinstance(value, float):
        # the only float is a duration (sleepInterval): NVIDIA marshals it as Go writes durations
        # ("1m0s", "infinite"); a bare number in the file would be read back as nanoseconds
        return format_duration(value)
    if isinstance(value, DeviceSelector):
        # NVIDIA's ReplicatedDevices marshal as "all", a count, or a list of references
        return "all" if value.all else value.count if value.count is not None else list(value.refs)
    if hasattr(value, "__dataclass_fields__"):
        out: dict[str, Any] = {}
        for name in value.__dataclass_fields__:
            v = getattr(value, name)
            if v is None or name in _NOT_LOGGED:
                continue
            key = _CAMEL_EXCEPTIONS.get(name, _camel(name))
            out[key] = _to_camel_dict(v)
        return out
    return value


def _camel(name: str) -> str:
    """``mig_strategy`` → ``migStrategy`` (the file's spelling)."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)
