"""The ``sharing.mps`` section of the device plugin's config file (NVIDIA's v1 format, plus slices).

NVIDIA-compatible part — each selected GPU split into ``replicas`` equal slices::

    sharing:
      mps:
        renameByDefault: false          # true: advertise <name>.shared
        failRequestsGreaterThanOne: false
        resources:
        - name: nvidia.com/gpu
          replicas: 4
          devices: all                  # all | a count | [0, 1, "GPU-…"]

kgpu's heterogeneous slices — differently sized slices on one GPU at the same time::

    sharing:
      mps:
        slices:
        - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2, devices: [0]}
        - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 12, count: 4, devices: [0]}
        allowComputeOversubscription: false

The pydantic model (:class:`MpsSharingModel`) validates the raw YAML; :func:`parse_mps_section`
turns it into plain values (:class:`MpsConfig`). Layout rules that depend on the node's GPUs
(oversubscription, MIG, architecture) live in :mod:`kgpu.sharing.layout`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kgpu.errors import ConfigError
from kgpu.fsio import read_text
from kgpu.sharing.quantity import parse_memory_mib

MAX_CLIENTS_PER_DAEMON = 48
"""MPS clients one control daemon serves per device on Volta and newer."""

DEFAULT_RESOURCE_PREFIX = "nvidia.com/"
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GPU_UUID = re.compile(r"^GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MIG_REF = re.compile(r"^(MIG-.*|\d+:\d+)$")


def normalize_resource_name(name: str) -> str:
    """``gpu-20gb`` → ``nvidia.com/gpu-20gb``; validates the extended-resource name syntax."""
    full = name if "/" in name else DEFAULT_RESOURCE_PREFIX + name
    domain, _, short = full.partition("/")
    if not _DOMAIN.match(domain) or len(domain) > 253 or not _NAME.match(short) or len(short) > 63 or "/" in short:
        raise ValueError(
            f"{name!r} is not an extended resource name: use <domain>/<name> such as nvidia.com/gpu-20gb "
            "(name: letters, digits, '-', '_', '.', at most 63 characters)"
        )
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        raise ValueError(f"{name!r}: the kubernetes.io domain is reserved for Kubernetes' own resources")
    return full


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


DevicesValue = Literal["all"] | int | list[int | str]


def _check_devices(value: DevicesValue) -> DevicesValue:
    if isinstance(value, bool):
        raise ValueError("devices must be 'all', a count of GPUs, or a list of GPU indices or UUIDs")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a device count must be > 0, got {value}")
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty devices list selects no GPU; use 'all' or list GPU indices or UUIDs")
        for ref in value:
            text = str(ref)
            if isinstance(ref, int) or text.isdigit():
                continue
            if _MIG_REF.match(text):
                raise ValueError(f"{text!r} is a MIG device: MPS sharing is not supported on MIG devices")
            if not _GPU_UUID.match(text):
                raise ValueError(f"{text!r} is neither a GPU index nor a GPU UUID (GPU-xxxxxxxx-xxxx-…)")
    return value


class ReplicaResourceModel(_Strict):
    """NVIDIA's ``ReplicaResource``: one resource split into equal replicas."""

    name: str
    rename: str | None = None
    replicas: int = Field(ge=1, le=MAX_CLIENTS_PER_DAEMON)
    devices: DevicesValue = "all"

    @field_validator("name")
    @classmethod
    def _gpu_only(cls, value: str) -> str:
        full = normalize_resource_name(value)
        if full != "nvidia.com/gpu":
            raise ValueError(f"{value!r}: MPS shares whole GPUs only, so the name must be nvidia.com/gpu "
                             "(use 'rename' to advertise it under another name)")
        return full

    @field_validator("rename")
    @classmethod
    def _rename(cls, value: str | None) -> str | None:
        return None if value is None else normalize_resource_name(value)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: DevicesValue) -> DevicesValue:
        return _check_devices(value)


class SliceModel(_Strict):
    """kgpu's heterogeneous slice: ``count`` slices of ``memory`` and ``computePercent`` per GPU."""

    name: str
    memory: str | int
    compute_percent: int = Field(alias="computePercent", ge=1, le=100)
    count: int = Field(default=1, ge=1, le=MAX_CLIENTS_PER_DAEMON)
    devices: DevicesValue = "all"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return normalize_resource_name(value)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | int) -> str | int:
        parse_memory_mib(value)
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: DevicesValue) -> DevicesValue:
        return _check_devices(value)


class MpsSharingModel(_Strict):
    """``sharing.mps`` exactly as written in the file."""

    rename_by_default: bool = Field(default=False, alias="renameByDefault")
    fail_requests_greater_than_one: bool = Field(default=False, alias="failRequestsGreaterThanOne")
    allow_compute_oversubscription: bool = Field(default=False, alias="allowComputeOversubscription")
    resources: list[ReplicaResourceModel] = Field(default_factory=list)
    slices: list[SliceModel] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeviceSelector:
    """Which GPUs an entry applies to: all of them, the first ``count``, or listed indices/UUIDs."""

    all: bool = False
    count: int | None = None
    refs: tuple[str, ...] = ()

    @classmethod
    def from_value(cls, value: DevicesValue) -> DeviceSelector:
        if value == "all":
            return cls(all=True)
        if isinstance(value, int):
            return cls(count=value)
        return cls(refs=tuple(str(v) for v in value))

    def describe(self) -> str:
        if self.all:
            return "all"
        if self.count is not None:
            return f"first {self.count}"
        return "[" + ", ".join(self.refs) + "]"


@dataclass(frozen=True, slots=True)
class ReplicaResource:
    name: str
    """Resource name as advertised (after ``rename`` / ``renameByDefault``)."""
    replicas: int
    devices: DeviceSelector


@dataclass(frozen=True, slots=True)
class SliceSpec:
    name: str
    memory_mib: int
    compute_percent: int
    count: int
    devices: DeviceSelector
    memory_text: str
    """The memory as the admin wrote it, for messages."""


@dataclass(frozen=True, slots=True)
class MpsConfig:
    """``sharing.mps`` as plain values. ``enabled`` is False when nothing is shared through MPS."""

    resources: tuple[ReplicaResource, ...] = ()
    slices: tuple[SliceSpec, ...] = ()
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False
    allow_compute_oversubscription: bool = False
    source: str = "<config>"

    @property
    def enabled(self) -> bool:
        return bool(self.resources or self.slices)


def from_model(model: MpsSharingModel, source: str = "<config>") -> MpsConfig:
    resources = []
    for r in model.resources:
        name = r.rename or (r.name + ".shared" if model.rename_by_default else r.name)
        resources.append(ReplicaResource(name=name, replicas=r.replicas, devices=DeviceSelector.from_value(r.devices)))
    slices = tuple(
        SliceSpec(
            name=s.name,
            memory_mib=parse_memory_mib(s.memory),
            compute_percent=s.compute_percent,
            count=s.count,
            devices=DeviceSelector.from_value(s.devices),
            memory_text=str(s.memory),
        )
        for s in model.slices
    )
    return MpsConfig(
        resources=tuple(resources),
        slices=slices,
        rename_by_default=model.rename_by_default,
        fail_requests_greater_than_one=model.fail_requests_greater_than_one,
        allow_compute_oversubscription=model.allow_compute_oversubscription,
        source=source,
    )


def format_validation_error(exc: ValidationError, source: str, prefix: str) -> str:
    """One clause per problem: ``FILE: sharing.mps.slices[0].computePercent: 150: Input should be …``."""
    clauses: dict[str, str] = {}
    for err in exc.errors():
        path = prefix
        branch = False
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in _UNION_BRANCHES or str(part).startswith(("literal[", "list[")):
                branch = True  # pydantic names union branches; an admin wants one message per key
            else:
                path += f".{part}"
        if path in clauses and branch:
            continue
        given = err.get("input")
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif branch:
            message = _UNION_HELP.get(path.rsplit(".", 1)[-1], message)
        shown = "" if isinstance(given, dict | list) or given is None or repr(given) in message else f" {given!r}:"
        clauses[path] = f"{source}: {path}:{shown} {message}"
    return "; ".join(clauses.values())


_UNION_BRANCHES = {"int", "str"}
_UNION_HELP = {
    "devices": "allowed: 'all', a count of GPUs, or a list of GPU indices or UUIDs",
    "memory": "allowed: an integer number of MiB (20480) or a quantity such as 20Gi, 512Mi, 10G",
}


def parse_mps_section(raw: Any, source: str = "<config>") -> MpsConfig:
    """Validate a ``sharing.mps`` mapping (or None) into :class:`MpsConfig`; ConfigError on bad input."""
    if raw is None:
        return MpsConfig(source=source)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: sharing.mps: expected a mapping with resources and/or slices, got {raw!r}")
    try:
        model = MpsSharingModel.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, "sharing.mps")) from None
    return from_model(model, source)


def load_mps_config(path: Path) -> MpsConfig:
    """Read a config file's ``sharing.mps`` section alone (``kgpu device-plugin`` and ``kgpu mps-daemon``
    read the whole file with :func:`kgpu.deviceplugin.config.resolve_config`, which uses
    :func:`parse_mps_section` for this section)."""
    import yaml

    text = read_text(path, f"config file {path}")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if doc is None:
        return MpsConfig(source=str(path))
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: expected a mapping with version: v1 at the top level")
    version = doc.get("version", "v1")
    if version != "v1":
        raise ConfigError(f"{path}: version: {version!r} is not supported; allowed: v1")
    sharing = doc.get("sharing")
    if sharing is not None and not isinstance(sharing, Mapping):
        raise ConfigError(f"{path}: sharing: expected a mapping (timeSlicing, mps)")
    return parse_mps_section((sharing or {}).get("mps"), str(path))
