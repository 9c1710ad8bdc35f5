"""The simulated backend's YAML fixture format, validated at the edge with pydantic.

A fixture describes one node: driver, CUDA version and each GPU as NVML would report it.
Built-in fixtures live in ``kgpu/gpu/fixtures/<name>.yaml``; a user can pass a path instead.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kgpu.config.limits import MAX_FIXTURE_BYTES, shown
from kgpu.config.yamltext import load_yaml
from kgpu.errors import ConfigError
from kgpu.fsio import read_text
from kgpu.gpu.model import (
    GPU,
    ComputeCapability,
    ComputeMode,
    CudaVersion,
    GPUReadings,
    Inventory,
    MigDevice,
    MigEngines,
    NvLinkPeer,
    architecture_family,
    mig_profile_slices,
)

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_GPU_UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MIG_UUID = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MIG_PROFILE = re.compile(r"^(\d+c\.)?\d+g\.\d+gb(\+me)?$")
_VERSION = re.compile(r"^\d+\.\d+$")
_T = TypeVar("_T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MigDeviceSpec(_Strict):
    uuid: str
    profile: str
    gpu_instance_id: int = Field(ge=0)
    compute_instance_id: int = Field(default=0, ge=0)
    memory_total_mib: int = Field(gt=0)
    multiprocessor_count: int = Field(gt=0)
    # NVML's MIG device attributes; slices default to the profile's, copy engines to one per GPU slice.
    gpu_instance_slices: int | None = Field(default=None, gt=0)
    compute_instance_slices: int | None = Field(default=None, gt=0)
    copy_engines: int | None = Field(default=None, ge=0)
    decoders: int = Field(default=0, ge=0)
    encoders: int = Field(default=0, ge=0)
    jpeg_decoders: int = Field(default=0, ge=0)
    ofa_engines: int = Field(default=0, ge=0)
    # The GPU instance's profile ID and placement (NVML GpuInstanceInfo), when the fixture knows them.
    profile_id: int | None = Field(default=None, ge=0)
    placement_start: int | None = Field(default=None, ge=0)
    placement_size: int | None = Field(default=None, gt=0)

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, v: str) -> str:
        if not _MIG_UUID.match(v):
            raise ValueError(f"{v!r} is not a MIG UUID (MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        if not _MIG_PROFILE.match(v):
            raise ValueError(f"{v!r} is not a MIG profile such as 1g.10gb or 1c.2g.20gb")
        return v


class NvLinkSpec(_Strict):
    peer: int = Field(ge=0, description="index of the peer GPU")
    links: int = Field(gt=0, le=18)


class ReadingsSpec(_Strict):
    gpu_utilization_percent: int | None = Field(default=None, ge=0, le=100)
    memory_copy_utilization_percent: int | None = Field(default=None, ge=0, le=100)
    encoder_utilization_percent: int | None = Field(default=None, ge=0, le=100)
    decoder_utilization_percent: int | None = Field(default=None, ge=0, le=100)
    memory_used_mib: int | None = Field(default=None, ge=0)
    memory_reserved_mib: int | None = Field(default=None, ge=0)
    temperature_c: int | None = None
    memory_temperature_c: int | None = None
    power_w: float | None = Field(default=None, ge=0)
    total_energy_mj: int | None = Field(default=None, ge=0)
    sm_clock_mhz: int | None = Field(default=None, ge=0)
    memory_clock_mhz: int | None = Field(default=None, ge=0)
    pcie_replay_counter: int | None = Field(default=None, ge=0)
    correctable_remapped_rows: int | None = Field(default=None, ge=0)
    uncorrectable_remapped_rows: int | None = Field(default=None, ge=0)
    row_remap_failure: bool | None = None
    nvlink_data_kib: int | None = Field(default=None, ge=0)
    """NVLink data counter (KiB); default 0 on a GPU with NVLink peers, none without."""
    vgpu_license_status: int | None = Field(default=None, ge=0, le=1)
    fail: bool = False
    """Every read of this GPU's sensors fails, as a hung or erroring GPU does."""


class GPUSpec(_Strict):
    index: int = Field(ge=0)
    minor: int | None = Field(default=None, ge=0)
    uuid: str
    name: str = Field(min_length=1)
    brand: str = "NVIDIA"
    compute_capability: str
    memory_total_mib: int = Field(gt=0)
    pci_bus_id: str
    pci_device_id: int = Field(gt=0)
    numa_node: int | None = None
    multiprocessor_count: int = Field(gt=0)
    persistence_mode: bool = True
    compute_mode: ComputeMode = ComputeMode.DEFAULT
    ecc_enabled: bool | None = True
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_devices: list[MigDeviceSpec] = Field(default_factory=list)
    nvlink: list[NvLinkSpec] = Field(default_factory=list)
    readings: ReadingsSpec = Field(default_factory=ReadingsSpec)

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, v: str) -> str:
        if not _GPU_UUID.match(v):
            raise ValueError(f"{v!r} is not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, lower-case hex)")
        return v

    @field_validator("compute_capability")
    @classmethod
    def _cc(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError(f"{v!r} is not a compute capability such as 9.0")
        return v

    @field_validator("pci_bus_id")
    @classmethod
    def _bus(cls, v: str) -> str:
        if not _BUS_ID.match(v):
            raise ValueError(f"{v!r} is not a PCI bus id such as 00000000:65:00.0")
        return v

    @field_validator("numa_node")
    @classmethod
    def _numa(cls, v: int | None) -> int | None:
        # sysfs says -1 when the platform reports no NUMA affinity (VMs, single-socket boards).
        return None if v is not None and v < 0 else v

    @model_validator(mode="after")
    def _mig(self) -> GPUSpec:
        if self.mig_devices and not self.mig_enabled:
            raise ValueError("mig_devices are listed but mig_enabled is false")
        if self.mig_enabled and not self.mig_capable:
            raise ValueError("mig_enabled is true but mig_capable is false")
        used = sum(m.memory_total_mib for m in self.mig_devices)
        if used > self.memory_total_mib:
            raise ValueError(f"MIG devices use {used} MiB, more than the GPU's {self.memory_total_mib} MiB")
        return self


class NodeSpec(_Strict):
    driver_version: str = Field(min_length=1)
    cuda_driver_version: str
    gpus: list[GPUSpec]

    @field_validator("cuda_driver_version")
    @classmethod
    def _cuda(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError(f"{v!r} is not a CUDA version such as 13.0")
        return v

    @model_validator(mode="after")
    def _cross(self) -> NodeSpec:
        indexes = [g.index for g in self.gpus]
        if sorted(indexes) != list(range(len(indexes))):
            raise ValueError(f"GPU indexes must be 0..{len(indexes) - 1} without gaps, got {indexes}")
        uuids = [g.uuid for g in self.gpus] + [m.uuid for g in self.gpus for m in g.mig_devices]
        dupes = sorted({u for u in uuids if uuids.count(u) > 1})
        if dupes:
            raise ValueError(f"duplicate UUIDs: {', '.join(dupes)}")
        buses = [g.pci_bus_id.lower() for g in self.gpus]
        if len(set(buses)) != len(buses):
            raise ValueError("two GPUs share a pci_bus_id")
        for g in self.gpus:
            for link in g.nvlink:
                if link.peer == g.index or link.peer not in indexes:
                    raise ValueError(f"gpus[{g.index}].nvlink: peer {link.peer} is not another GPU of this node")
        return self


def builtin_fixture_names() -> list[str]:
    folder = resources.files("kgpu.gpu") / "fixtures"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_fixture_text(name_or_path: str) -> tuple[str, str]:
    """Return (source description, YAML text) for a built-in name or a file path."""
    if name_or_path in builtin_fixture_names():
        text = (resources.files("kgpu.gpu") / "fixtures" / f"{name_or_path}.yaml").read_text()
        return f"built-in fixture {name_or_path!r}", text
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"simulated node {name_or_path!r}: no such built-in fixture or file; "
            f"built-in fixtures are {', '.join(builtin_fixture_names())}"
        )
    return str(path), read_text(path, f"fixture {path}", limit=MAX_FIXTURE_BYTES)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_fixture(source: str, text: str) -> NodeSpec:
    raw: Any = load_yaml(text, f"fixture {source}")
    if not isinstance(raw, dict):
        raise ConfigError(f"fixture {source}: expected a mapping with driver_version, cuda_driver_version, gpus")
    try:
        return NodeSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        plain = err["type"] != "missing" and not isinstance(err["input"], dict)
        value = f" (got {shown(err['input'])})" if plain else ""
        raise ConfigError(
            f"fixture {source}: field {_location(err['loc'])}: {err['msg']}{value}{more}"
        ) from exc


def build_inventory(spec: NodeSpec) -> Inventory:
    uuid_by_index = {g.index: g.uuid for g in spec.gpus}
    gpus = []
    for g in sorted(spec.gpus, key=lambda g: g.index):
        cc = ComputeCapability.parse(g.compute_capability)
        gpus.append(
            GPU(
                index=g.index,
                minor=g.index if g.minor is None else g.minor,
                uuid=g.uuid,
                name=g.name,
                brand=g.brand,
                family=architecture_family(cc),
                compute_capability=cc,
                memory_total_mib=g.memory_total_mib,
                pci_bus_id=g.pci_bus_id.upper().replace("0X", "0x"),
                pci_device_id=g.pci_device_id,
                numa_node=g.numa_node,
                multiprocessor_count=g.multiprocessor_count,
                persistence_mode=g.persistence_mode,
                compute_mode=g.compute_mode,
                ecc_enabled=g.ecc_enabled,
                mig_capable=g.mig_capable,
                mig_enabled=g.mig_enabled,
                mig_devices=tuple(
                    MigDevice(
                        uuid=m.uuid,
                        index=i,
                        profile=m.profile,
                        gpu_instance_id=m.gpu_instance_id,
                        compute_instance_id=m.compute_instance_id,
                        memory_total_mib=m.memory_total_mib,
                        multiprocessor_count=m.multiprocessor_count,
                        parent_uuid=g.uuid,
                        parent_index=g.index,
                        profile_id=m.profile_id,
                        placement_start=m.placement_start,
                        placement_size=m.placement_size,
                        gpu_instance_slices=m.gpu_instance_slices or 0,
                        compute_instance_slices=m.compute_instance_slices or 0,
                        engines=MigEngines(
                            copy=(
                                m.copy_engines
                                if m.copy_engines is not None
                                else m.gpu_instance_slices or mig_profile_slices(m.profile)[0]
                            ),
                            decoder=m.decoders,
                            encoder=m.encoders,
                            jpeg=m.jpeg_decoders,
                            ofa=m.ofa_engines,
                        ),
                    )
                    for i, m in enumerate(g.mig_devices)
                ),
                nvlink_peers=tuple(
                    NvLinkPeer(peer_index=link.peer, peer_uuid=uuid_by_index[link.peer], links=link.links)
                    for link in sorted(g.nvlink, key=lambda x: x.peer)
                ),
            )
        )
    return Inventory(
        backend="simulated",
        driver_version=spec.driver_version,
        cuda_driver_version=CudaVersion.parse(spec.cuda_driver_version),
        gpus=tuple(gpus),
    )


def fixture_readings(gpu: GPUSpec) -> GPUReadings:
    """Readings from the fixture, with plausible idle values where the fixture says nothing."""
    r = gpu.readings
    used = r.memory_used_mib if r.memory_used_mib is not None else 1
    reserved = r.memory_reserved_mib if r.memory_reserved_mib is not None else min(512, gpu.memory_total_mib // 64)
    return GPUReadings(
        uuid=gpu.uuid,
        gpu_utilization_percent=_or(r.gpu_utilization_percent, 0),
        memory_copy_utilization_percent=_or(r.memory_copy_utilization_percent, 0),
        encoder_utilization_percent=_or(r.encoder_utilization_percent, 0),
        decoder_utilization_percent=_or(r.decoder_utilization_percent, 0),
        memory_used_mib=used,
        memory_free_mib=max(gpu.memory_total_mib - used - reserved, 0),
        memory_reserved_mib=reserved,
        temperature_c=_or(r.temperature_c, 30 + gpu.index),
        memory_temperature_c=r.memory_temperature_c,
        power_w=_or(r.power_w, 60.0 + gpu.index),
        total_energy_mj=_or(r.total_energy_mj, 1_000_000 * (gpu.index + 1)),
        sm_clock_mhz=_or(r.sm_clock_mhz, 345),
        memory_clock_mhz=_or(r.memory_clock_mhz, 1593),
        pcie_replay_counter=_or(r.pcie_replay_counter, 0),
        correctable_remapped_rows=_or(r.correctable_remapped_rows, 0),
        uncorrectable_remapped_rows=_or(r.uncorrectable_remapped_rows, 0),
        row_remap_failure=_or(r.row_remap_failure, False),
        nvlink_data_kib=r.nvlink_data_kib if r.nvlink_data_kib is not None else (0 if gpu.nvlink else None),
        vgpu_license_status=_or(r.vgpu_license_status, 0),
    )


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
