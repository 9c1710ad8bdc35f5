"""The node's GPU inventory: immutable values every kgpu component is a view of.

A snapshot is cheap (static facts only); live readings come from a separate call
(:meth:`kgpu.gpu.GPUBackend.readings`) so listing devices never pays for sensors.

Example::

    inv = open_backend(simulate="h100x8").inventory()
    [g.name for g in inv.gpus]  # ['NVIDIA H100 80GB HBM3', ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ComputeMode(StrEnum):
    """NVML compute modes, spelled as nvidia-smi prints them."""

    DEFAULT = "Default"
    EXCLUSIVE_THREAD = "Exclusive_Thread"
    PROHIBITED = "Prohibited"
    EXCLUSIVE_PROCESS = "Exclusive_Process"


@dataclass(frozen=True, slots=True, order=True)
class ComputeCapability:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> ComputeCapability:
        major, _, minor = text.partition(".")
        return cls(int(major), int(minor or 0))


@dataclass(frozen=True, slots=True, order=True)
class CudaVersion:
    """CUDA driver API version (what ``nvidia-smi`` prints as "CUDA Version")."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def from_int(cls, value: int) -> CudaVersion:
        """NVML/cuDriverGetVersion encode 13.0 as 13000."""
        return cls(value // 1000, (value % 1000) // 10)

    @classmethod
    def parse(cls, text: str) -> CudaVersion:
        major, _, minor = text.partition(".")
        return cls(int(major), int(minor or 0))


def architecture_family(cc: ComputeCapability) -> str:
    """Architecture family from compute capability, spelled as gpu-feature-discovery labels it."""
    match cc.major:
        case 1:
            return "tesla"
        case 2:
            return "fermi"
        case 3:
            return "kepler"
        case 5:
            return "maxwell"
        case 6:
            return "pascal"
        case 7:
            return "volta" if cc.minor < 5 else "turing"
        case 8:
            return "ampere" if cc.minor < 9 else "ada-lovelace"
        case 9:
            return "hopper"
        case 10 | 11 | 12:
            return "blackwell"
    return "undefined"


@dataclass(frozen=True, slots=True)
class MigEngines:
    """Engines a MIG device holds, as NVML's device attributes count them (``shared*Count``)."""

    copy: int = 0
    decoder: int = 0
    encoder: int = 0
    jpeg: int = 0
    ofa: int = 0


def mig_profile_slices(profile: str) -> tuple[int, int]:
    """(GPU instance slices, compute instance slices) from a profile name.

    ``3g.40gb`` → (3, 3); ``1c.3g.40gb`` → (3, 1); ``1g.10gb+me`` → (1, 1); unparsable → (0, 0).
    """
    parts = profile.split(".")
    ci = int(parts[0][:-1]) if parts and parts[0].endswith("c") and parts[0][:-1].isdigit() else 0
    gpart = parts[1] if ci else parts[0]
    gi = int(gpart[:-1]) if gpart.endswith("g") and gpart[:-1].isdigit() else 0
    return gi, ci or gi


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG device (a GPU instance plus its compute instance) carved out of a parent GPU."""

    uuid: str
    index: int
    """Position among the parent's MIG devices (NVML's MIG device handle index)."""
    profile: str
    """GPU instance profile as NVIDIA names it, e.g. ``1g.10gb``."""
    gpu_instance_id: int
    compute_instance_id: int
    memory_total_mib: int
    multiprocessor_count: int
    parent_uuid: str
    parent_index: int
    gpu_instance_slices: int = 0
    """GPU instance slices (NVML ``gpuInstanceSliceCount``); 0 means "derive from the profile"."""
    compute_instance_slices: int = 0
    """Compute instance slices (NVML ``computeInstanceSliceCount``); 0 means "derive from the profile"."""
    engines: MigEngines = MigEngines()
    profile_id: int | None = None
    """The GPU instance profile's ID as the driver numbers it (``nvidia-smi mig -lgip``: 19 is 1g.10gb on an
    A100 80GB); None where unknown."""
    placement_start: int | None = None
    """First memory slice of the GPU instance's placement (NVML ``GpuInstanceInfo.placement.start``)."""
    placement_size: int | None = None
    """Memory slices the GPU instance spans."""

    def __post_init__(self) -> None:
        gi, ci = mig_profile_slices(self.profile)
        if self.gpu_instance_slices == 0:
            object.__setattr__(self, "gpu_instance_slices", gi)
        if self.compute_instance_slices == 0:
            object.__setattr__(self, "compute_instance_slices", ci)


@dataclass(frozen=True, slots=True)
class NvLinkPeer:
    """A GPU this GPU is connected to over NVLink, and over how many active links."""

    peer_index: int
    peer_uuid: str
    links: int


@dataclass(frozen=True, slots=True)
class GPU:
    index: int
    minor: int
    """Minor number of ``/dev/nvidiaN``."""
    uuid: str
    name: str
    """Product name exactly as NVML reports it, e.g. ``NVIDIA H100 80GB HBM3``."""
    brand: str
    family: str
    compute_capability: ComputeCapability
    memory_total_mib: int
    pci_bus_id: str
    """NVML's form, ``00000000:65:00.0`` (8-digit domain)."""
    pci_device_id: int
    """PCI vendor and device id as NVML packs them: device << 16 | vendor (0x233010de)."""
    numa_node: int | None
    multiprocessor_count: int
    persistence_mode: bool
    compute_mode: ComputeMode
    ecc_enabled: bool | None
    mig_capable: bool
    mig_enabled: bool
    mig_devices: tuple[MigDevice, ...] = ()
    nvlink_peers: tuple[NvLinkPeer, ...] = ()

    @property
    def sysfs_bus_id(self) -> str:
        """Bus id as ``/sys/bus/pci/devices`` names it: ``0000:65:00.0`` (4-digit domain, lower case)."""
        return sysfs_bus_id(self.pci_bus_id)

    @property
    def device_node(self) -> str:
        return f"/dev/nvidia{self.minor}"

    def nvlinks_to(self, peer_index: int) -> int:
        return sum(p.links for p in self.nvlink_peers if p.peer_index == peer_index)


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """``00000000:65:00.0`` → ``0000:65:00.0``; already-short ids pass through lower-cased."""
    domain, _, rest = nvml_bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}"


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything static about the node's GPUs, read once from a backend."""

    backend: str
    driver_version: str
    cuda_driver_version: CudaVersion
    gpus: tuple[GPU, ...] = field(default=())

    def by_uuid(self, uuid: str) -> GPU | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def by_index(self, index: int) -> GPU | None:
        return next((g for g in self.gpus if g.index == index), None)

    @property
    def mig_devices(self) -> tuple[MigDevice, ...]:
        return tuple(m for g in self.gpus for m in g.mig_devices)


@dataclass(frozen=True, slots=True)
class GPUReadings:
    """Live sensor values for one GPU; ``None`` where the GPU or driver does not provide a value."""

    uuid: str
    gpu_utilization_percent: int | None = None
    memory_copy_utilization_percent: int | None = None
    encoder_utilization_percent: int | None = None
    decoder_utilization_percent: int | None = None
    memory_used_mib: int | None = None
    memory_free_mib: int | None = None
    memory_reserved_mib: int | None = None
    temperature_c: int | None = None
    memory_temperature_c: int | None = None
    power_w: float | None = None
    total_energy_mj: int | None = None
    """Energy since the driver was loaded, in millijoules (NVML's unit)."""
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    pcie_replay_counter: int | None = None
    correctable_remapped_rows: int | None = None
    uncorrectable_remapped_rows: int | None = None
    row_remap_failure: bool | None = None
    nvlink_data_kib: int | None = None
    """NVLink data received plus transmitted over all links since the driver loaded, in KiB (NVML's
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX + _TX); None on a GPU without NVLink."""
    vgpu_license_status: int | None = None
    """1 when the vGPU feature is licensed, 0 when not or not licensable (DCGM's DCGM_FI_DEV_VGPU_LICENSE_STATUS)."""
