"""The device plugin's configuration: NVIDIA's v1 config file, plus the same settings as flags and env vars.

kgpu reads the file NVIDIA's k8s-device-plugin reads (``version: v1``, ``flags``, ``resources``,
``sharing``, ``imex``, ``health``), with the same keys, defaults, flag names and environment
variable names, so an existing ConfigMap keeps working. Precedence is NVIDIA's:
command-line flag > environment variable > config file > default.

Beyond NVIDIA: ``resources.gpus`` / ``resources.mig`` renaming and ``sharing.timeSlicing.resources[]``
``rename`` / ``devices`` are honoured (NVIDIA parses but ignores them), the device list strategy
``driver-mounts`` needs no container toolkit, and unknown keys are errors rather than silently dropped.

The file's format (pydantic models, YAML) lives in :mod:`kgpu.deviceplugin.configfile`, loaded only
to read a file: the values here are all a running device plugin needs.

Example::

    config = resolve_config({"mig-strategy": "mixed"}, os.environ, Path("/etc/kgpu/config.yaml"))
    config.flags.mig_strategy               # 'mixed' (the flag wins over the file)
    config.sharing.strategy                 # 'time-slicing' when the file asks for replicas
    [r.name for r in config.sharing.time_slicing.resources]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from kgpu.errors import ConfigError
from kgpu.sharing.paths import DEFAULT_MPS_ROOT as _KGPU_MPS_ROOT

if TYPE_CHECKING:
    from kgpu.deviceplugin.configfile import ConfigFileSpec as ConfigFileSpec
    from kgpu.deviceplugin.configfile import TimeSlicingSpec as TimeSlicingSpec
    from kgpu.deviceplugin.configfile import load_config_file as load_config_file
    from kgpu.deviceplugin.configfile import parse_config_text as parse_config_text
    from kgpu.sharing.config import MpsConfig

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
    from kgpu.deviceplugin.configfile import ConfigFileSpec, _file_flag_values, load_config_file
    from kgpu.sharing.config import parse_mps_section

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
            key = _CAMEL_EXCEPTIONS.get(name, _camel(name))
            out[key] = _to_camel_dict(v)
        return out
    return value


def _camel(name: str) -> str:
    """``mig_strategy`` → ``migStrategy`` (the file's spelling; pydantic's ``to_camel`` for these names)."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


_FILE_FORMAT = frozenset({"ConfigFileSpec", "TimeSlicingSpec", "load_config_file", "parse_config_text"})


def __getattr__(name: str) -> Any:
    """The file format's names, from :mod:`kgpu.deviceplugin.configfile` (pydantic, loaded on first use)."""
    if name in _FILE_FORMAT:
        from kgpu.deviceplugin import configfile

        return getattr(configfile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
