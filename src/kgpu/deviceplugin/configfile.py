"""NVIDIA's v1 config file as written: its format, validated with pydantic (loaded only to read a file).

:mod:`kgpu.deviceplugin.config` holds the plain values and the precedence rules and imports this
module when it resolves a configuration, so that a running device plugin (handed its resolved
configuration, :mod:`kgpu.handoff`) never loads pydantic or YAML.

Example::

    spec = parse_config_text("version: v1\nflags:\n  migStrategy: mixed\n", "my.yaml")
    spec.flags.mig_strategy                 # 'mixed'
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

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

from kgpu.deviceplugin.config import (
    _DNS_SUBDOMAIN,
    _GO_DURATION,
    _GPU_INDEX,
    _GPU_UUID,
    _MIG_INDEX,
    _MIG_UUID,
    DEVICE_LIST_STRATEGIES,
    MAX_RESOURCE_NAME_LENGTH,
    RESOURCE_NAME_PREFIX,
    SHARED_SUFFIX,
    VERSION,
    AllocationPolicy,
    DeviceDiscoveryStrategy,
    DeviceIDStrategy,
    MigStrategy,
    ReplicatedDevices,
    ReplicatedResource,
    ReplicatedResources,
    _check_device_list_strategy,
)
from kgpu.errors import ConfigError
from kgpu.fsio import read_text

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
    return parse_config_text(read_text(path, f"config file {path}"), f"config file {path}")


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
