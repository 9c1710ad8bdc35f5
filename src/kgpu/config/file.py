"""NVIDIA's v1 config file as written: its format, validated with pydantic at the edge.

The keys, types and rules are NVIDIA's ``api/config/v1`` (``Config``, ``Flags``, ``Resources``,
``Sharing``, ``Imex``) plus kgpu's additions (``sharing.mps.slices``, the ``driver-mounts``
strategy, ``health``). Unknown keys are errors that list the allowed ones; keys NVIDIA's plugin
ignores or takes only on its command line are refused with the reason.

Example::

    spec = parse_config_text("version: v1\\nflags:\\n  migStrategy: mixed\\n", "my.yaml")
    spec.flags.mig_strategy                 # 'mixed'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from kgpu.config.duration import go_duration
from kgpu.config.limits import (
    MAX_CONFIG_BYTES,
    MAX_MPS_CLIENTS_PER_GPU,
    MAX_REPLICAS_PER_GPU,
    shown,
)
from kgpu.config.quantity import ALLOWED_FORMS, parse_memory_mib
from kgpu.config.values import (
    DEFAULT_DYNAMIC_SHARES,
    DEVICE_LIST_STRATEGIES,
    INFINITE,
    MAX_RESOURCE_NAME_LENGTH,
    RESOURCE_NAME_PREFIX,
    SHARED_SUFFIX,
    VERSION,
    AllocationPolicy,
    DeviceDiscoveryStrategy,
    DeviceIDStrategy,
    DeviceSelector,
    DynamicShares,
    MigStrategy,
    MpsConfig,
    ReplicaResource,
    ReplicatedResource,
    ReplicatedResources,
    SliceSpec,
)
from kgpu.config.yamltext import load_yaml
from kgpu.errors import ConfigError
from kgpu.fsio import read_text

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_UUID_BODY = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GPU_UUID = re.compile(rf"^GPU-{_UUID_BODY}$")
_MIG_UUID = re.compile(rf"^MIG-({_UUID_BODY}|GPU-{_UUID_BODY}/\d+/\d+)$")
_GPU_INDEX = re.compile(r"^\d+$")
_MIG_INDEX = re.compile(r"^\d+:\d+$")
_EXT_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

REFUSED_KEYS: dict[str, str] = {
    "flags.restartOnDeviceUnhealthy": "not a key of NVIDIA's v1 config; kgpu advertises a GPU healthy again "
    "once it recovers (--health-recovery-window), so no restart is needed",
    "flags.plugin.kubeletSocket": "NVIDIA takes the kubelet socket on the command line only: use --kubelet-socket "
    "or KUBELET_SOCKET",
    "flags.plugin.cdiFeatureFlags": "NVIDIA takes CDI feature flags on the command line only: use "
    "--cdi-feature-flags or CDI_FEATURE_FLAGS",
    "flags.plugin.nvidiaCDIHookPath": "the file's key for the hook is nvidiaCTKPath (the flag is "
    "--nvidia-cdi-hook-path)",
}
"""Keys an admin may write, refused with the reason (rather than "unknown key")."""


# --------------------------------------------------------------------------------------------------
# The format, validated with pydantic
# --------------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    """Strict base: camelCase keys as NVIDIA spells them; unknown keys are errors naming the allowed ones."""

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


def resource_name(value: str) -> str:
    """NVIDIA's NewResourceName: add the ``nvidia.com/`` prefix, check length and DNS-subdomain form."""
    if not isinstance(value, str) or not value:
        raise ValueError("a resource name must be a non-empty string such as gpu or nvidia.com/gpu")
    full = value if value.startswith(RESOURCE_NAME_PREFIX + "/") else f"{RESOURCE_NAME_PREFIX}/{value}"
    if len(full) > MAX_RESOURCE_NAME_LENGTH:
        raise ValueError(
            f"fully-qualified resource name {shown(full)} is {len(full)} characters; "
            f"at most {MAX_RESOURCE_NAME_LENGTH} are allowed"
        )
    short = full.split("/", 1)[1]
    if not _DNS_SUBDOMAIN.match(short):
        raise ValueError(
            f"resource name {shown(full)}: {shown(short)} must be lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (the prefix is always nvidia.com/)"
        )
    return full


def extended_resource_name(name: str) -> str:
    """``gpu-20gb`` → ``nvidia.com/gpu-20gb``; any domain but kubernetes.io (kgpu's MPS slices)."""
    full = name if "/" in name else f"{RESOURCE_NAME_PREFIX}/{name}"
    domain, _, short = full.partition("/")
    if not _DNS_SUBDOMAIN.match(domain) or len(domain) > 253 or not _EXT_NAME.match(short) or len(short) > 63:
        raise ValueError(
            f"{shown(name)} is not an extended resource name: use <domain>/<name> such as nvidia.com/gpu-20gb "
            "(name: letters, digits, '-', '_', '.', at most 63 characters)"
        )
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        raise ValueError(f"{shown(name)}: the kubernetes.io domain is reserved for Kubernetes' own resources")
    return full


def parse_devices(value: Any, *, mig_allowed: bool = True) -> DeviceSelector:
    """NVIDIA's ReplicatedDevices: ``"all"``, a positive whole count, or a list of indexes / UUIDs.

    ``2.0`` is refused as NVIDIA refuses it (a count is an integer); MIG references are refused where
    the devices are whole GPUs (MPS).
    """
    if isinstance(value, str):
        if value != "all":
            raise ValueError(f"devices is {shown(value)}, but the only string allowed is 'all'")
        return DeviceSelector(all=True)
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise ValueError("devices must be 'all', a whole count of devices, or a list of indexes or UUIDs")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"devices is {value}, but a count of devices must be > 0")
        return DeviceSelector(all=False, count=value)
    refs: list[str] = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            refs.append(str(item))
            continue
        if isinstance(item, str) and not mig_allowed and (item.startswith("MIG-") or _MIG_INDEX.match(item)):
            raise ValueError(f"{shown(item)} is a MIG device: MPS sharing is not supported on MIG devices")
        if isinstance(item, str) and (_MIG_INDEX.match(item) or _MIG_UUID.match(item)):
            refs.append(item)
            continue
        if isinstance(item, str) and (_GPU_INDEX.match(item) or _GPU_UUID.match(item)):
            refs.append(item)
            continue
        raise ValueError(
            f"devices entry {shown(item)} is not a GPU index (0), a MIG index (0:1), "
            "a GPU UUID (GPU-…) or a MIG UUID (MIG-…)"
        )
    if not refs:
        raise ValueError("devices is an empty list; use 'all', a count, or list at least one device")
    return DeviceSelector(all=False, refs=tuple(refs))


class _ResourcePatternSpec(_Spec):
    pattern: str = Field(min_length=1)
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return resource_name(v)


class _ResourcesSpec(_Spec):
    gpus: list[_ResourcePatternSpec] = []
    mig: list[_ResourcePatternSpec] = []


class _ReplicatedResourceSpec(_Spec):
    name: str
    replicas: int = Field(ge=2, le=MAX_REPLICAS_PER_GPU)
    rename: str | None = None
    devices: Any = Field(default="all", validate_default=True)

    @field_validator("name", "rename")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else resource_name(v)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> DeviceSelector:
        return parse_devices(v)


class TimeSlicingSpec(_Spec):
    """``sharing.timeSlicing`` as written in the file (NVIDIA's ``ReplicatedResources``)."""

    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    resources: list[_ReplicatedResourceSpec] | None = None

    @model_validator(mode="after")
    def _has_resources(self) -> TimeSlicingSpec:
        if not self.resources:
            raise ValueError("no resources specified: list at least one {name, replicas} entry")
        return self

    def to_value(self) -> ReplicatedResources:
        resources = []
        for r in self.resources or ():
            rename = r.rename or (r.name + SHARED_SUFFIX if self.rename_by_default else None)
            resources.append(ReplicatedResource(name=r.name, replicas=r.replicas, rename=rename, devices=r.devices))
        return ReplicatedResources(
            rename_by_default=self.rename_by_default,
            fail_requests_greater_than_one=self.fail_requests_greater_than_one,
            resources=tuple(resources),
        )


class _MpsReplicasSpec(_Spec):
    """NVIDIA's ``ReplicatedResource`` under ``sharing.mps``: whole GPUs split into equal MPS clients."""

    name: str
    replicas: int = Field(ge=2, le=MAX_MPS_CLIENTS_PER_GPU)
    rename: str | None = None
    devices: Any = Field(default="all", validate_default=True)

    @field_validator("name", "rename")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else resource_name(v)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> DeviceSelector:
        return parse_devices(v, mig_allowed=False)


class _SliceSpec(_Spec):
    """kgpu's heterogeneous slice: ``count`` slices of ``memory`` and ``computePercent`` per GPU."""

    name: str
    memory: str | int
    compute_percent: int = Field(ge=1, le=100)
    count: int = Field(default=1, ge=1, le=MAX_MPS_CLIENTS_PER_GPU)
    devices: Any = Field(default="all", validate_default=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return extended_resource_name(value)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | int) -> str | int:
        parse_memory_mib(value)
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> DeviceSelector:
        return parse_devices(v, mig_allowed=False)


class _DynamicSpec(_Spec):
    """kgpu's dynamic shares: each pod's share carved out by kgpu-scheduler from HAMi's requests."""

    devices: Any = Field(default="all", validate_default=True)
    shares: int = Field(default=DEFAULT_DYNAMIC_SHARES, ge=1, le=MAX_MPS_CLIENTS_PER_GPU)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> DeviceSelector:
        return parse_devices(v, mig_allowed=False)


class MpsSpec(_Spec):
    """``sharing.mps`` as written: NVIDIA's ``ReplicatedResources`` plus kgpu's slices and dynamic shares."""

    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = True
    allow_compute_oversubscription: bool = False
    resources: list[_MpsReplicasSpec] | None = None
    slices: list[_SliceSpec] | None = None
    dynamic: _DynamicSpec | None = None

    @model_validator(mode="after")
    def _has_resources(self) -> MpsSpec:
        if not self.resources and not self.slices and self.dynamic is None:
            raise ValueError("no resources specified: list at least one {name, replicas} entry "
                             "(or kgpu's slices, or dynamic)")
        return self

    def to_value(self, source: str) -> MpsConfig:
        resources = []
        for r in self.resources or ():
            name = r.rename or (r.name + SHARED_SUFFIX if self.rename_by_default else r.name)
            resources.append(ReplicaResource(name=name, replicas=r.replicas, devices=r.devices, source=r.name))
        slices = tuple(
            SliceSpec(
                name=s.name,
                memory_mib=parse_memory_mib(s.memory),
                compute_percent=s.compute_percent,
                count=s.count,
                devices=s.devices,
                memory_text=str(s.memory),
            )
            for s in self.slices or ()
        )
        return MpsConfig(
            resources=tuple(resources),
            slices=slices,
            rename_by_default=self.rename_by_default,
            fail_requests_greater_than_one=self.fail_requests_greater_than_one,
            allow_compute_oversubscription=self.allow_compute_oversubscription,
            source=source,
            dynamic=None if self.dynamic is None else DynamicShares(devices=self.dynamic.devices,
                                                                    shares=self.dynamic.shares),
        )


class _SharingSpec(_Spec):
    time_slicing: TimeSlicingSpec | None = None
    mps: MpsSpec | None = None


def _check_device_list_strategy(items: Sequence[str]) -> tuple[str, ...]:
    if not items:
        raise ValueError(f"no device list strategy given; at least one of {', '.join(DEVICE_LIST_STRATEGIES)}")
    bad = [i for i in items if i not in DEVICE_LIST_STRATEGIES]
    if bad:
        raise ValueError(f"invalid strategy {shown(bad[0])}; allowed: {', '.join(DEVICE_LIST_STRATEGIES)}")
    return tuple(dict.fromkeys(items))


class _PluginFlagsSpec(_Spec):
    pass_device_specs: bool | None = None
    device_list_strategy: Any = None
    device_id_strategy: DeviceIDStrategy | None = Field(default=None, alias="deviceIDStrategy")
    cdi_annotation_prefix: str | None = None
    nvidia_ctk_path: str | None = Field(default=None, alias="nvidiaCTKPath")
    container_driver_root: str | None = None
    shared_devices_allocation_policy: AllocationPolicy | None = None

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
    sleep_interval: Any = None
    output_file: str | None = None
    machine_type_file: str | None = None

    @field_validator("sleep_interval")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        """NVIDIA's Duration: a number is nanoseconds (Go's time.Duration), a string Go's syntax or infinite."""
        if v is None:
            return None
        if isinstance(v, bool):
            raise ValueError("must be a duration such as 60s or 1m30s, or infinite")
        if isinstance(v, (int, float)):
            return INFINITE if v >= 2**63 - 1 else v / 1e9
        if isinstance(v, str):
            if v == "infinite":
                return INFINITE
            seconds = go_duration(v)
            if seconds is not None:
                return seconds
        raise ValueError(f"{shown(v)} is not a duration such as 60s or 1m30s, or infinite")


class _FlagsSpec(_Spec):
    mig_strategy: MigStrategy | None = None
    fail_on_init_error: bool | None = None
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
    channel_ids: list[int] | None = Field(default=None, alias="channelIDs")
    required: bool = False


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
            raise ValueError(f"unknown version {shown(v)}; the only version is {VERSION!r}")
        return v


# --------------------------------------------------------------------------------------------------
# Reading a file
# --------------------------------------------------------------------------------------------------


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _dotted(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc if not isinstance(p, int))


def _first_error(source: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    # Drop pydantic's internal union/validator markers from the location.
    loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    if loc and loc[-1] in _UNION_BRANCHES:
        loc = loc[:-1]
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    if err["type"] == "unknown_key":
        ctx = err.get("ctx", {})
        key = str(ctx.get("key", "?"))
        refused = REFUSED_KEYS.get(_dotted([*loc, key]))
        if refused is not None:
            return ConfigError(f"{source}: {_format_loc([*loc, key])} is refused: {refused}")
        allowed = str(ctx.get("allowed", "")).split(", ")
        guess = [a for a in allowed if a.lower() == key.lower()] or difflib.get_close_matches(key, allowed, 1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        where = _format_loc(loc)
        return ConfigError(
            f"{source}: unknown key {_format_loc([*loc, shown(key)[1:-1]])} (value {shown(ctx.get('value'))}){hint} "
            f"Allowed keys{' under ' + where if loc else ''}: {', '.join(allowed)}{more}"
        )
    msg = str(err["msg"]).removeprefix("Value error, ")
    if loc and loc[-1] in _UNION_HELP and err["type"].endswith("_type"):
        msg = f"allowed: {_UNION_HELP[str(loc[-1])]}"
    value = err.get("input")
    shown_value = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {shown(value)})"
    if err["type"] in ("less_than_equal", "greater_than_equal") and err.get("ctx"):
        if "le" in err["ctx"]:
            msg = f"{shown(value)} is above the limit of {err['ctx']['le']}{_limit_reason(_format_loc(loc))}"
        else:
            msg = f"{shown(value)} is below the minimum of {err['ctx']['ge']}"
        shown_value = ""
    return ConfigError(f"{source}: {_format_loc(loc)}: {msg}{shown_value}{more}")


_UNION_BRANCHES = {"str", "int", "float", "bool", "list"}
_UNION_HELP = {"memory": ALLOWED_FORMS}


def _limit_reason(where: str) -> str:
    if where.startswith("sharing.mps") and where.endswith(("replicas", "count")):
        return " (an MPS daemon serves at most 48 clients per GPU)"
    if where.endswith("replicas") and "timeSlicing" in where:
        return (f" replicas per GPU (more than {MAX_REPLICAS_PER_GPU} replicas of one GPU can never be in use on "
                "one node; see kgpu.config.limits)")
    return ""


def parse_config_document(raw: Any, source: str = "config") -> ConfigFileSpec:
    """Validate an already-parsed document (e.g. a ConfigMap's ``config.yaml``); errors name ``source``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with version, flags, resources, sharing; got {shown(raw)}")
    try:
        return ConfigFileSpec.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(source, exc) from None


def parse_config_text(text: str, source: str = "config") -> ConfigFileSpec:
    """Validate the text of a config file (YAML or JSON); errors name ``source``, the key and the value."""
    return parse_config_document(load_yaml(text, source), source)


def read_config_text(path: Path) -> str:
    """The text of a config file, at most :data:`MAX_CONFIG_BYTES`; ConfigError naming the file."""
    return read_text(path, f"config file {path}", limit=MAX_CONFIG_BYTES)


def load_config_file(path: Path) -> ConfigFileSpec:
    return parse_config_text(read_config_text(path), f"config file {path}")


def parse_mps_section(raw: Any, source: str = "<config>") -> MpsConfig:
    """Validate a ``sharing.mps`` mapping (or None, nothing shared) into :class:`MpsConfig`."""
    if raw is None:
        return MpsConfig(source=source)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: sharing.mps: expected a mapping with resources and/or slices, got {shown(raw)}")
    spec = parse_config_document({"sharing": {"mps": dict(raw)}}, source)
    assert spec.sharing is not None and spec.sharing.mps is not None
    return spec.sharing.mps.to_value(source)


def file_value(spec: ConfigFileSpec, key: str) -> object:
    """The value the file gives for a dotted camelCase key (``flags.plugin.deviceListStrategy``), or None."""
    node: Any = spec
    for part in key.split("."):
        if node is None:
            return None
        name = field_name(type(node), part)
        node = getattr(node, name)
    return node


def field_name(model: type[BaseModel], alias: str) -> str:
    """The attribute of ``model`` written as ``alias`` in the file; KeyError if there is none."""
    for name, f in model.model_fields.items():
        if (f.alias or name) == alias:
            return name
    raise KeyError(f"{model.__name__} has no key {alias}")


def key_exists(key: str) -> bool:
    """Whether ``key`` (dotted camelCase) is a key of the file format."""
    model: Any = ConfigFileSpec
    for part in key.split("."):
        try:
            name = field_name(model, part)
        except KeyError:
            return False
        pending, args = [model.model_fields[name].annotation], []
        while pending:  # Optional[list[Model]]: the models inside unions and lists
            annotation = pending.pop()
            inner = getattr(annotation, "__args__", None)
            if inner is None:
                args.append(annotation)
            else:
                pending.extend(inner)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return part == key.split(".")[-1]
    return True


__all__ = [
    "REFUSED_KEYS",
    "ConfigFileSpec",
    "MpsSpec",
    "TimeSlicingSpec",
    "extended_resource_name",
    "field_name",
    "file_value",
    "key_exists",
    "load_config_file",
    "load_yaml",
    "parse_config_document",
    "parse_config_text",
    "parse_devices",
    "parse_mps_section",
    "read_config_text",
    "resource_name",
]
