"""The device plugin's configuration: NVIDIA's v1 config file, plus the same settings as flags and env vars.

kgpu reads the file NVIDIA's k8s-device-plugin reads (``version: v1``, ``flags``, ``resources``,
``sharing``, ``imex``, ``health``), with the same keys, defaults, flag names and environment
variable names, so an existing ConfigMap keeps working. Precedence is NVIDIA's:
command-line flag > environment variable > config file > default.

Beyond NVIDIA: ``resources.gpus`` / ``resources.mig`` renaming and ``sharing.timeSlicing.resources[]``
``rename`` / ``devices`` are honoured (NVIDIA parses but ignores them), the device list strategy
``driver-mounts`` needs no container toolkit, and unknown keys are errors rather than silently dropped.

Example::

    config = resolve_config({"mig-strategy": "mixed"}, os.environ, Path("/etc/kgpu/config.yaml"))
    config.flags.mig_strategy               # 'mixed' (the flag wins over the file)
    config.sharing.strategy                 # 'time-slicing' when the file asks for replicas
    [r.name for r in config.sharing.time_slicing.resources]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from kgpu.errors import ConfigError
from kgpu.sharing.config import MpsConfig, parse_mps_section
from kgpu.sharing.paths import DEFAULT_MPS_ROOT as _KGPU_MPS_ROOT

VERSION = "v1"
RESOURCE_NAME_PREFIX = "nvidia.com"
SHARED_SUFFIX = ".shared"
MAX_RESOURCE_NAME_LENGTH = 63

MIG_STRATEGIES = ("none", "single", "mixed")
DEVICE_ID_STRATEGIES = ("uuid", "index")
NVIDIA_DEVICE_LIST_STRATEGIES = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
DRIVER_MOUNTS: Final = "driver-mounts"
"""kgpu's own device list strategy: device nodes, driver libraries and binaries, no container toolkit."""
DEVICE_LIST_STRATEGIES = (*NVIDIA_DEVICE_LIST_STRATEGIES, DRIVER_MOUNTS)
ALLOCATION_POLICIES = ("distributed", "packed", "spread")
DEVICE_DISCOVERY_STRATEGIES = ("auto", "nvml", "tegra")
SHARING_STRATEGIES = ("none", "time-slicing", "mps")

DEFAULT_CDI_ANNOTATION_PREFIX = "cdi.k8s.io/"
DEFAULT_NVIDIA_CTK_PATH = "/usr/bin/nvidia-ctk"
DEFAULT_CONTAINER_DRIVER_ROOT = "/driver-root"
DEFAULT_MPS_ROOT = str(_KGPU_MPS_ROOT)
"""kgpu's MPS daemons keep their pipes here (NVIDIA's plugin defaults to /run/nvidia/mps)."""

MigStrategy = Literal["none", "single", "mixed"]
DeviceIDStrategy = Literal["uuid", "index"]
DeviceListStrategy = Literal["envvar", "volume-mounts", "cdi-annotations", "cdi-cri", "driver-mounts"]
AllocationPolicy = Literal["distributed", "packed", "spread"]
DeviceDiscoveryStrategy = Literal["auto", "nvml", "tegra"]
SharingStrategy = Literal["none", "time-slicing", "mps"]

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_UUID_BODY = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GPU_UUID = re.compile(rf"^GPU-{_UUID_BODY}$")
_MIG_UUID = re.compile(rf"^MIG-({_UUID_BODY}|GPU-{_UUID_BODY}/\d+/\d+)$")
_GPU_INDEX = re.compile(r"^\d+$")
_MIG_INDEX = re.compile(r"^\d+:\d+$")
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


# --------------------------------------------------------------------------------------------------
# Plain values used inside kgpu (what the rest of the device plugin and the labels read)
# --------------------------------------------------------------------------------------------------


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
    kubelet_socket: str | None = None
    cdi_feature_flags: str | None = None

    def uses(self, strategy: DeviceListStrategy) -> bool:
        return strategy in self.device_list_strategy

    @property
    def any_cdi(self) -> bool:
        return any(s.startswith("cdi-") for s in self.device_list_strategy)

    @property
    def all_cdi(self) -> bool:
        """Every strategy is a CDI one (NVIDIA then adds no env, mounts or device specs)."""
        return all(s.startswith("cdi-") for s in self.device_list_strategy)


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
    restart_on_device_unhealthy: bool = False
    plugin: PluginFlags = field(default_factory=PluginFlags)

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
        regex = ".*".join(re.escape(part) for part in self.pattern.split("*"))
        # NVIDIA uses regexp.MatchString, which searches rather than anchors; keep that.
        return re.search(regex, text) is not None


@dataclass(frozen=True, slots=True)
class Resources:
    gpus: tuple[ResourcePattern, ...] = ()
    mig: tuple[ResourcePattern, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicatedDevices:
    """Which devices of a resource are shared: all of them, the first ``count``, or those in ``refs``."""

    all: bool = True
    count: int | None = None
    refs: tuple[str, ...] = ()
    """GPU indexes (``"0"``), MIG indexes (``"0:1"``), GPU or MIG UUIDs."""


@dataclass(frozen=True, slots=True)
class ReplicatedResource:
    """One entry of ``sharing.<strategy>.resources``."""

    name: str
    """The resource whose devices are shared, fully qualified (``nvidia.com/gpu``)."""
    replicas: int
    rename: str | None = None
    """Resource name the replicas are advertised under; ``None`` keeps ``name``."""
    devices: ReplicatedDevices = field(default_factory=ReplicatedDevices)

    @property
    def advertised_name(self) -> str:
        return self.rename or self.name


@dataclass(frozen=True, slots=True)
class ReplicatedResources:
    """``sharing.timeSlicing`` or ``sharing.mps``: how many replicas each device is split into."""

    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    resources: tuple[ReplicatedResource, ...] = ()


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
class PluginConfig:
    """The resolved configuration: file, environment and flags merged, every value validated."""

    version: str = VERSION
    flags: Flags = field(default_factory=Flags)
    resources: Resources = field(default_factory=Resources)
    sharing: Sharing = field(default_factory=Sharing)
    imex: Imex = field(default_factory=Imex)
    health: Health | None = None
    config_file: str | None = None
    """The file the settings came from, if any (for log lines and error messages)."""

    def to_dict(self) -> dict[str, Any]:
        """The configuration in NVIDIA's file shape (camelCase keys), e.g. to log it at start-up."""
        out: dict[str, Any] = _to_camel_dict(self)
        return out


# --------------------------------------------------------------------------------------------------
# The file format, validated with pydantic at the edge
# --------------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    """Strict base: camelCase keys as NVIDIA spells them, unknown keys are errors naming the allowed ones."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", strict=True, frozen=True
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = sorted(f.alias or n for n, f in cls.model_fields.items())
            for key, value in data.items():
                if key not in allowed:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {key}",
                        {"key": str(key), "value": value, "allowed": ", ".join(allowed)},
                    )
        return data


def _resource_name(value: str) -> str:
    """NVIDIA's NewResourceName: add the ``nvidia.com/`` prefix, check length and DNS-subdomain form."""
    if not isinstance(value, str) or not value:
        raise ValueError("a resource name must be a non-empty string such as gpu or nvidia.com/gpu")
    full = value if value.startswith(RESOURCE_NAME_PREFIX + "/") else f"{RESOURCE_NAME_PREFIX}/{value}"
    if len(full) > MAX_RESOURCE_NAME_LENGTH:
        raise ValueError(
            f"fully-qualified resource name {full!r} is {len(full)} characters; "
            f"at most {MAX_RESOURCE_NAME_LENGTH} are allowed"
        )
    short = full.split("/", 1)[1]
    if not _DNS_SUBDOMAIN.match(short) or len(short) > 253:
        raise ValueError(
            f"resource name {full!r}: {short!r} must be lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (the prefix is always nvidia.com/)"
        )
    return full


class _ResourcePatternSpec(_Spec):
    pattern: str = Field(min_length=1)
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _resource_name(v)


class _ResourcesSpec(_Spec):
    gpus: list[_ResourcePatternSpec] = []
    mig: list[_ResourcePatternSpec] = []


def _parse_replicated_devices(value: Any) -> ReplicatedDevices:
    """NVIDIA's ReplicatedDevices: ``"all"``, a positive count, or a list of indexes / UUIDs."""
    if isinstance(value, str):
        if value != "all":
            raise ValueError(f"devices is {value!r}, but the only string allowed is 'all'")
        return ReplicatedDevices(all=True)
    if isinstance(value, bool):
        raise ValueError("devices must be 'all', a count of devices, or a list of indexes or UUIDs")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"devices is {value}, but a count of devices must be > 0")
        return ReplicatedDevices(all=False, count=value)
    if isinstance(value, list):
        refs: list[str] = []
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
                refs.append(str(item))
                continue
            if isinstance(item, str) and (
                _GPU_INDEX.match(item) or _MIG_INDEX.match(item) or _GPU_UUID.match(item) or _MIG_UUID.match(item)
            ):
                refs.append(item)
                continue
            raise ValueError(
                f"devices entry {item!r} is not a GPU index (0), a MIG index (0:1), "
                "a GPU UUID (GPU-…) or a MIG UUID (MIG-…)"
            )
        if not refs:
            raise ValueError("devices is an empty list; use 'all', a count, or list at least one device")
        return ReplicatedDevices(all=False, refs=tuple(refs))
    raise ValueError("devices must be 'all', a count of devices, or a list of indexes or UUIDs")


class _ReplicatedResourceSpec(_Spec):
    name: str
    replicas: int = Field(ge=2)
    rename: str | None = None
    devices: Any = Field(default="all", validate_default=True)

    @field_validator("name", "rename")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _resource_name(v)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> ReplicatedDevices:
        return _parse_replicated_devices(v)


class TimeSlicingSpec(_Spec):
    """``sharing.timeSlicing`` as written in the file (NVIDIA's ``ReplicatedResources``)."""

    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    resources: list[_ReplicatedResourceSpec] = []

    @model_validator(mode="after")
    def _has_resources(self) -> TimeSlicingSpec:
        if not self.resources:
            raise ValueError("no resources specified: list at least one {name, replicas} entry")
        return self

    def to_value(self) -> ReplicatedResources:
        resources = []
        for r in self.resources:
            rename = r.rename or (r.name + SHARED_SUFFIX if self.rename_by_default else None)
            resources.append(
                ReplicatedResource(name=r.name, replicas=r.replicas, rename=rename, devices=r.devices)
            )
        return ReplicatedResources(
            rename_by_default=self.rename_by_default,
            fail_requests_greater_than_one=self.fail_requests_greater_than_one,
            resources=tuple(resources),
        )


class _SharingSpec(_Spec):
    time_slicing: TimeSlicingSpec | None = None
    mps: Any = None
    """Validated by :func:`kgpu.sharing.config.parse_mps_section` (NVIDIA replicas plus kgpu's slices)."""


class _PluginFlagsSpec(_Spec):
    pass_device_specs: bool | None = None
    device_list_strategy: Any = None
    device_id_strategy: DeviceIDStrategy | None = Field(default=None, alias="deviceIDStrategy")
    cdi_annotation_prefix: str | None = None
    nvidia_ctk_path: str | None = Field(default=None, alias="nvidiaCTKPath")
    nvidia_cdi_hook_path: str | None = Field(default=None, alias="nvidiaCDIHookPath")
    container_driver_root: str | None = None
    shared_devices_allocation_policy: AllocationPolicy | None = None
    kubelet_socket: str | None = None
    cdi_feature_flags: str | None = Field(default=None, alias="cdiFeatureFlags")

    @field_validator("device_list_strategy")
    @classmethod
    def _dls(cls, v: Any) -> tuple[str, ...] | None:
        if v is None:
            return None
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(
                f"must be a strategy or a list of strategies from {', '.join(DEVICE_LIST_STRATEGIES)}"
            )
        return _check_device_list_strategy(items)


class _GfdFlagsSpec(_Spec):
    oneshot: bool | None = None
    no_timestamp: bool | None = None
    sleep_interval: str | int | None = None
    output_file: str | None = None
    machine_type_file: str | None = None

    @field_validator("sleep_interval")
    @classmethod
    def _duration(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, str) and not _GO_DURATION.match(v):
            raise ValueError(f"{v!r} is not a duration such as 60s or 1m30s")
        return v


class _FlagsSpec(_Spec):
    mig_strategy: MigStrategy | None = None
    fail_on_init_error: bool | None = None
    restart_on_device_unhealthy: bool | None = None
    mps_root: str | None = None
    nvidia_driver_root: str | None = None
    nvidia_dev_root: str | None = None
    gdrcopy_enabled: bool | None = Field(default=None, alias="gdrcopyEnabled")
    gds_enabled: bool | None = None
    mofed_enabled: bool | None = Field(default=None, alias="mofedEnabled")
    use_node_feature_api: bool | None = Field(default=None, alias="useNodeFeatureAPI")
    device_discovery_strategy: DeviceDiscoveryStrategy | None = None
    plugin: _PluginFlagsSpec | None = None
    gfd: _GfdFlagsSpec | None = None


class _ImexSpec(_Spec):
    channel_ids: list[int] = Field(default=[], alias="channelIDs")
    required: bool = False

    @field_validator("channel_ids")
    @classmethod
    def _ids(cls, v: list[int]) -> list[int]:
        if v not in ([], [0]):
            raise ValueError(f"channelIDs must be [] or [0]; found {v}")
        return v


_EVENT_TYPES = ("EventTypeXidCriticalError", "EventTypeDoubleBitEccError", "EventTypeSingleBitEccError")


class _HealthSpec(_Spec):
    disabled: bool = False
    event_types: list[Literal[
        "EventTypeXidCriticalError", "EventTypeDoubleBitEccError", "EventTypeSingleBitEccError"
    ]] = []
    ignored_xids: list[int] = Field(default=[], alias="ignoredXIDs")
    critical_xids: Any = Field(default=None, alias="criticalXIDs")

    @field_validator("critical_xids")
    @classmethod
    def _critical(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.lower() == "all"):
            return "all" if v is not None else None
        if isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
            return tuple(v)
        raise ValueError('criticalXIDs must be "all" or a list of XID numbers')

    @model_validator(mode="after")
    def _no_conflict(self) -> _HealthSpec:
        if isinstance(self.critical_xids, tuple):
            both = sorted(set(self.critical_xids) & set(self.ignored_xids))
            if both:
                raise ValueError(f"XID {both[0]} is in both ignoredXIDs and criticalXIDs")
        return self


class ConfigFileSpec(_Spec):
    """NVIDIA's v1 config file."""

    version: str = VERSION
    flags: _FlagsSpec | None = None
    resources: _ResourcesSpec | None = None
    sharing: _SharingSpec | None = None
    imex: _ImexSpec | None = None
    health: _HealthSpec | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != VERSION:
            raise ValueError(f"unknown version {v!r}; the only version is {VERSION!r}")
        return v


def _check_device_list_strategy(items: Sequence[str]) -> tuple[str, ...]:
    if not items:
        raise ValueError(f"no device list strategy given; at least one of {', '.join(DEVICE_LIST_STRATEGIES)}")
    bad = [i for i in items if i not in DEVICE_LIST_STRATEGIES]
    if bad:
        raise ValueError(f"invalid strategy {bad[0]!r}; allowed: {', '.join(DEVICE_LIST_STRATEGIES)}")
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------------
# Flags and environment variables, with NVIDIA's names
# --------------------------------------------------------------------------------------------------

FlagKind = Literal["str", "bool", "list"]


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One setting that can come from a flag, an environment variable or the config file."""

    name: str
    """Flag name without dashes, as NVIDIA spells it (``mig-strategy``)."""
    env: tuple[str, ...]
    path: tuple[str, ...]
    """Where the setting lives in :class:`Flags` (``("plugin", "device_list_strategy")``)."""
    kind: FlagKind
    default: str | bool | tuple[str, ...] | None
    help: str
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


PLUGIN_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("mig-strategy", ("MIG_STRATEGY",), ("mig_strategy",), "str", "none",
             "How MIG devices are exposed on GPUs in MIG mode: none (whole GPUs only), single (MIG devices "
             "as nvidia.com/gpu), mixed (nvidia.com/mig-<profile>).", MIG_STRATEGIES),
    FlagSpec("fail-on-init-error", ("FAIL_ON_INIT_ERROR",), ("fail_on_init_error",), "bool", True,
             "Exit with an error when GPUs or NVML cannot be initialised; false logs why and idles "
             "(for DaemonSets that also land on GPU-less nodes)."),
    FlagSpec("nvidia-driver-root", ("NVIDIA_DRIVER_ROOT",), ("nvidia_driver_root",), "str", "/",
             "Root of the NVIDIA driver installation on the host ('/' or '/run/nvidia/driver').",
             aliases=("driver-root",)),
    FlagSpec("nvidia-dev-root", ("NVIDIA_DEV_ROOT",), ("nvidia_dev_root",), "str", None,
             "Root of the NVIDIA device nodes on the host; defaults to the driver root.",
             aliases=("dev-root",)),
    FlagSpec("mps-root", ("MPS_ROOT",), ("mps_root",), "str", DEFAULT_MPS_ROOT,
             "Host directory for MPS pipes and logs."),
    FlagSpec("gdrcopy-enabled", ("GDRCOPY_ENABLED",), ("gdrcopy_enabled",), "bool", False,
             "Give containers GDRCopy support."),
    FlagSpec("gds-enabled", ("GDS_ENABLED",), ("gds_enabled",), "bool", False,
             "Start containers with NVIDIA_GDS=enabled."),
    FlagSpec("mofed-enabled", ("MOFED_ENABLED",), ("mofed_enabled",), "bool", False,
             "Start containers with NVIDIA_MOFED=enabled."),
    FlagSpec("device-discovery-strategy", ("DEVICE_DISCOVERY_STRATEGY",), ("device_discovery_strategy",),
             "str", "auto", "How devices are discovered: auto, nvml or tegra.", DEVICE_DISCOVERY_STRATEGIES),
    FlagSpec("restart-on-device-unhealthy", ("RESTART_ON_DEVICE_UNHEALTHY",), ("restart_on_device_unhealthy",),
             "bool", False, "Fail the liveness check while any device is unhealthy."),
    FlagSpec("pass-device-specs", ("PASS_DEVICE_SPECS",), ("plugin", "pass_device_specs"), "bool", False,
             "Return the device nodes (/dev/nvidiaN, /dev/nvidiactl, /dev/nvidia-uvm, ...) as DeviceSpecs "
             "in Allocate, so they are in the container's device cgroup."),
    FlagSpec("device-list-strategy", ("DEVICE_LIST_STRATEGY",), ("plugin", "device_list_strategy"), "list",
             ("envvar",),
             "How the allocated devices reach the container runtime (comma-separated): envvar, "
             "volume-mounts, cdi-annotations, cdi-cri, or kgpu's driver-mounts (no container toolkit).",
             DEVICE_LIST_STRATEGIES),
    FlagSpec("device-id-strategy", ("DEVICE_ID_STRATEGY",), ("plugin", "device_id_strategy"), "str", "uuid",
             "How devices are named to the runtime: uuid (GPU-…, MIG-…) or index (0, 0:1).",
             DEVICE_ID_STRATEGIES),
    FlagSpec("cdi-annotation-prefix", ("CDI_ANNOTATION_PREFIX",), ("plugin", "cdi_annotation_prefix"), "str",
             DEFAULT_CDI_ANNOTATION_PREFIX, "Prefix of CDI annotation keys (cdi-annotations strategy)."),
    FlagSpec("nvidia-ctk-path", ("NVIDIA_CTK_PATH", "NVIDIA_CDI_HOOK_PATH"), ("plugin", "nvidia_ctk_path"),
             "str", DEFAULT_NVIDIA_CTK_PATH, "Path of nvidia-ctk (or nvidia-cdi-hook) used in CDI specs.",
             aliases=("nvidia-cdi-hook-path",)),
    FlagSpec("container-driver-root", ("CONTAINER_DRIVER_ROOT", "DRIVER_ROOT_CTR_PATH"),
             ("plugin", "container_driver_root"), "str", DEFAULT_CONTAINER_DRIVER_ROOT,
             "Where the driver root is mounted inside the plugin's own container.",
             aliases=("driver-root-ctr-path",)),
    FlagSpec("shared-devices-allocation-policy", ("SHARED_DEVICES_ALLOCATION_POLICY",),
             ("plugin", "shared_devices_allocation_policy"), "str", "distributed",
             "How shared replicas are picked: distributed (spread over the least-used GPUs), packed "
             "(fill the busiest GPU first) or spread (as many distinct GPUs as possible).",
             ALLOCATION_POLICIES),
)
CONFIG_FILE_FLAG = FlagSpec("config-file", ("CONFIG_FILE",), (), "str", None,
                            "NVIDIA v1 config file (YAML or JSON); flags and env vars override it.")
FLAG_NAMES: tuple[str, ...] = (*(f.name for f in PLUGIN_FLAGS), CONFIG_FILE_FLAG.name)
"""Every flag :func:`resolve_config` understands, for the server's command line to declare."""


def _flag_value(spec: FlagSpec, raw: object, source: str) -> object:
    """Parse one flag or env value; errors name the source, the value and what is allowed."""
    if spec.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw)
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{source}: {text!r} is not a boolean; use true or false")
    if spec.kind == "list":
        items: list[str]
        if isinstance(raw, str):
            items = [s.strip() for s in raw.split(",") if s.strip()]
        elif isinstance(raw, (list, tuple)):
            items = [str(s).strip() for s in raw if str(s).strip()]
        else:
            raise ConfigError(f"{source}: {raw!r} is not a comma-separated list")
        try:
            return _check_device_list_strategy(items)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    text = str(raw)
    if spec.choices and text not in spec.choices:
        raise ConfigError(f"{source}: {text!r} is not one of {', '.join(spec.choices)}")
    return text


def _lookup_flag(flags: Mapping[str, object], spec: FlagSpec) -> tuple[object, str] | None:
    for name in (spec.name, *spec.aliases):
        for key in (name, name.replace("-", "_")):
            value = flags.get(key)
            if value is not None:
                return value, f"flag --{name}"
    return None


def _lookup_env(environ: Mapping[str, str], spec: FlagSpec) -> tuple[object, str] | None:
    for env in spec.env:
        value = environ.get(env)
        if value:  # unset and empty are the same: an empty variable does not override the file
            return value, f"environment variable {env}={value}"
    return None


# --------------------------------------------------------------------------------------------------
# Loading and resolving
# --------------------------------------------------------------------------------------------------


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _first_error(source: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    # Drop pydantic's internal union/validator markers from the location.
    loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        return ConfigError(f"{source}: unknown key {_format_loc(loc)} (value {err.get('input')!r}){more}")
    if err["type"] == "unknown_key":
        ctx = err.get("ctx", {})
        key = str(ctx.get("key", "?"))
        allowed = str(ctx.get("allowed", "")).split(", ")
        guess = [a for a in allowed if a.lower() == key.lower()] or difflib.get_close_matches(key, allowed, 1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        where = _format_loc(loc)
        return ConfigError(
            f"{source}: unknown key {_format_loc([*loc, key])} (value {ctx.get('value')!r}){hint} "
            f"Allowed keys{' under ' + where if loc else ''}: {', '.join(allowed)}{more}"
        )
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
    return ConfigError(f"{source}: {_format_loc(loc)}: {msg}{shown}{more}")


def parse_config_text(text: str, source: str = "config") -> ConfigFileSpec:
    """Validate the text of a config file (YAML or JSON); errors name ``source``, the key and the value."""
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with version, flags, resources, sharing; got {raw!r}")
    try:
        return ConfigFileSpec.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(source, exc) from exc


def load_config_file(path: Path) -> ConfigFileSpec:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from exc
    return parse_config_text(text, f"config file {path}")


def _file_flag_values(spec: ConfigFileSpec) -> dict[tuple[str, ...], object]:
    """Settings the file sets, keyed like :attr:`FlagSpec.path`."""
    out: dict[tuple[str, ...], object] = {}
    f = spec.flags
    if f is None:
        return out
    for name in (
        "mig_strategy", "fail_on_init_error", "restart_on_device_unhealthy", "mps_root", "nvidia_driver_root",
        "nvidia_dev_root", "gdrcopy_enabled", "gds_enabled", "mofed_enabled", "use_node_feature_api",
        "device_discovery_strategy",
    ):
        value = getattr(f, name)
        if value is not None:
            out[(name,)] = value
    p = f.plugin
    if p is not None:
        for name in (
            "pass_device_specs", "device_list_strategy", "device_id_strategy", "cdi_annotation_prefix",
            "container_driver_root", "shared_devices_allocation_policy", "kubelet_socket", "cdi_feature_flags",
        ):
            value = getattr(p, name)
            if value is not None:
                out[("plugin", name)] = value
        ctk = p.nvidia_cdi_hook_path or p.nvidia_ctk_path
        if ctk is not None:
            out[("plugin", "nvidia_ctk_path")] = ctk
    return out


def resolve_config(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
) -> PluginConfig:
    """Merge flags > environment > config file > defaults into one validated :class:`PluginConfig`.

    ``flags`` is keyed by NVIDIA's flag names (``mig-strategy``; ``mig_strategy`` also works); a
    value of ``None`` means "not given on the command line". ``config_file`` wins over the
    ``config-file`` flag and ``CONFIG_FILE``. Raises :class:`ConfigError` with the file, key, value
    and allowed values for anything invalid.
    """
    flags = flags or {}
    environ = environ or {}
    path: str | None = None
    if config_file is not None and str(config_file):
        path = str(config_file)
    else:
        found = _lookup_flag(flags, CONFIG_FILE_FLAG) or _lookup_env(environ, CONFIG_FILE_FLAG)
        if found is not None and str(found[0]):
            path = str(found[0])
    spec = load_config_file(Path(path)) if path else ConfigFileSpec()

    from_file = _file_flag_values(spec)
    values: dict[tuple[str, ...], object] = {}
    for fs in PLUGIN_FLAGS:
        given = _lookup_flag(flags, fs) or _lookup_env(environ, fs)
        if given is not None:
            values[fs.path] = _flag_value(fs, given[0], given[1])
        elif fs.path in from_file:
            values[fs.path] = from_file[fs.path]
        elif fs.default is not None:
            values[fs.path] = fs.default
    for key in (("plugin", "kubelet_socket"), ("plugin", "cdi_feature_flags"), ("use_node_feature_api",)):
        if key in from_file:
            values[key] = from_file[key]

    plugin_kwargs = {k[1]: v for k, v in values.items() if len(k) == 2 and k[0] == "plugin"}
    flag_kwargs = {k[0]: v for k, v in values.items() if len(k) == 1}
    resolved_flags = Flags(
        plugin=PluginFlags(**plugin_kwargs),  # type: ignore[arg-type]
        **flag_kwargs,  # type: ignore[arg-type]
    )

    resources = Resources()
    if spec.resources is not None:
        resources = Resources(
            gpus=tuple(ResourcePattern(r.pattern, r.name) for r in spec.resources.gpus),
            mig=tuple(ResourcePattern(r.pattern, r.name) for r in spec.resources.mig),
        )
    sharing = Sharing()
    if spec.sharing is not None:
        time_slicing = spec.sharing.time_slicing
        mps = parse_mps_section(spec.sharing.mps, f"config file {path}") if spec.sharing.mps is not None else None
        sharing = Sharing(time_slicing=time_slicing.to_value() if time_slicing is not None else None, mps=mps)
    imex = Imex()
    if spec.imex is not None:
        imex = Imex(channel_ids=tuple(spec.imex.channel_ids), required=spec.imex.required)
    health = None
    if spec.health is not None:
        h = spec.health
        health = Health(
            disabled=h.disabled,
            event_types=tuple(h.event_types),
            ignored_xids=tuple(h.ignored_xids),
            critical_xids=h.critical_xids,
        )

    config = PluginConfig(
        flags=resolved_flags, resources=resources, sharing=sharing, imex=imex, health=health, config_file=path
    )
    _check_combination(config)
    return config


def _check_combination(config: PluginConfig) -> None:
    """Cross-setting rules NVIDIA enforces at start-up (validateFlags)."""
    where = f"config file {config.config_file}" if config.config_file else "configuration"
    ts, mps = config.sharing.time_slicing, config.sharing.mps
    if ts is not None and ts.resources and mps is not None and mps.enabled:
        raise ConfigError(f"{where}: set either sharing.timeSlicing or sharing.mps, not both")
    if config.sharing.strategy == "mps":
        if config.flags.mig_strategy == "mixed":
            raise ConfigError(
                f"{where}: sharing.mps cannot be combined with migStrategy mixed; use none or single"
            )
        if not config.flags.mps_root:
            raise ConfigError(f"{where}: sharing.mps needs flags.mpsRoot (or --mps-root / MPS_ROOT)")


_CAMEL_EXCEPTIONS = {
    "nvidia_ctk_path": "nvidiaCTKPath",
    "device_id_strategy": "deviceIDStrategy",
    "use_node_feature_api": "useNodeFeatureAPI",
    "channel_ids": "channelIDs",
    "ignored_xids": "ignoredXIDs",
    "critical_xids": "criticalXIDs",
    "refs": "list",
}


def _to_camel_dict(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_camel_dict(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        out: dict[str, Any] = {}
        for name in value.__dataclass_fields__:
            v = getattr(value, name)
            if v is None or name == "config_file":
                continue
            key = _CAMEL_EXCEPTIONS.get(name, to_camel(name))
            out[key] = _to_camel_dict(v)
        return out
    return value
