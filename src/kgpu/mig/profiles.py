"""MIG GPU instance profiles of the GPUs kgpu knows: what each profile holds and where it may be placed.

A MIG-capable GPU of these generations has 8 memory slices and 7 compute slices. A GPU instance of a profile
takes ``size`` consecutive memory slices starting at one of its allowed ``starts`` (NVML's
``nvmlDeviceGetGpuInstancePossiblePlacements``); two instances may not overlap, and no profile may have more
than ``max_count`` instances. Profile IDs, placements and the 1-slice ``+me`` variant (one per GPU, all media
engines) are as ``nvidia-smi mig -lgip`` / ``-lgipp`` print them in NVIDIA's MIG user guide; memory sizes
and SM counts are NVML's profile info as go-nvml's mock GPUs carry them (``pkg/nvml/mock/gpus``).
``scripts/device/mig_read.sh`` prints the real H200's profile table, read-only, for comparison.

    table = profile_table(gpu)              # None when kgpu has no table for this GPU
    table.by_name["3g.40gb"].starts         # (0, 4)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kgpu.gpu.model import GPU


@dataclass(frozen=True, slots=True)
class GpuInstanceProfile:
    name: str
    """As NVIDIA names it: ``1g.10gb``, ``1g.10gb+me``, ``7g.80gb``."""
    profile_id: int
    """NVML's GPU instance profile ID (``nvidia-smi mig -lgip``), e.g. 19 for 1g.10gb."""
    compute_slices: int
    size: int
    """Memory slices an instance spans (the placement size)."""
    starts: tuple[int, ...]
    """First memory slice of each allowed placement."""
    max_count: int
    memory_mib: int
    multiprocessors: int
    decoders: int = 0
    jpeg: int = 0
    ofa: int = 0
    nvml_index: int = 0
    """The NVML_GPU_INSTANCE_PROFILE_* constant whose profile info carries ``profile_id``."""


@dataclass(frozen=True, slots=True)
class ProfileTable:
    model: str
    memory_slices: int
    profiles: tuple[GpuInstanceProfile, ...]

    @property
    def by_name(self) -> Mapping[str, GpuInstanceProfile]:
        return {p.name: p for p in self.profiles}


_SEVEN = (0, 1, 2, 3, 4, 5, 6)


def _table(model: str, mem: tuple[int, int, int, int, int, int, int], sms: tuple[int, int, int, int, int, int],
           names: tuple[str, str, str, str, str, str, str]) -> ProfileTable:
    """The 8-slice layout shared by A100 and H100/H200: 1g, 1g+me, 1g (two memory slices), 2g, 3g, 4g, 7g."""
    one, one_me, one_wide, two, three, four, seven = names
    m1, m1me, m1w, m2, m3, m4, m7 = mem
    s1, s1w, s2, s3, s4, s7 = sms
    return ProfileTable(model, 8, (
        GpuInstanceProfile(one, 19, 1, 1, _SEVEN, 7, m1, s1, decoders=0 if model.startswith("A100") else 1,
                           nvml_index=0),
        GpuInstanceProfile(one_me, 20, 1, 1, _SEVEN, 1, m1me, s1, decoders=1, jpeg=1, ofa=1, nvml_index=7),
        GpuInstanceProfile(one_wide, 15, 1, 2, (0, 2, 4, 6), 4, m1w, s1w, decoders=1, nvml_index=9),
        GpuInstanceProfile(two, 14, 2, 2, (0, 2, 4), 3, m2, s2, decoders=1, nvml_index=1),
        GpuInstanceProfile(three, 9, 3, 4, (0, 4), 2, m3, s3, decoders=2, nvml_index=2),
        GpuInstanceProfile(four, 5, 4, 4, (0,), 1, m4, s4, decoders=2, nvml_index=3),
        GpuInstanceProfile(seven, 0, 7, 8, (0,), 1, m7, s7, decoders=5, jpeg=1, ofa=1, nvml_index=4),
    ))


A100_40GB = _table("A100-40GB", (4864, 4864, 9856, 9856, 19968, 19968, 40192), (14, 14, 28, 42, 56, 98),
                   ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"))
A100_80GB = _table("A100-80GB", (9856, 9856, 19968, 19968, 40192, 40192, 80384), (14, 14, 28, 42, 56, 98),
                   ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"))
# GH100 (H100 SXM, H200) has 132 SMs: a 1g holds 16, the wide 1g 26, 2g 32, 3g 60, 4g 64 and 7g all 132, as NVML
# reports them on the H200 (scripts/device/mig_read.sh, 2026-12-02); memory sizes of the H200 are its NVML readings.
H100_80GB = _table("H100-80GB", (10240, 10240, 20480, 20480, 40960, 40960, 81920), (16, 26, 32, 60, 64, 132),
                   ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"))
H200_141GB = _table("H200-141GB", (16384, 16384, 33280, 33280, 71424, 71424, 143360), (16, 26, 32, 60, 64, 132),
                    ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"))

# PCI device IDs (device << 16 | vendor), as NVIDIA's default mig-parted config filters them.
TABLES: dict[int, ProfileTable] = {
    0x20B010DE: A100_40GB, 0x20B110DE: A100_40GB, 0x20F110DE: A100_40GB, 0x20F610DE: A100_40GB,
    0x20B210DE: A100_80GB, 0x20B510DE: A100_80GB, 0x20F310DE: A100_80GB, 0x20F510DE: A100_80GB,
    0x233010DE: H100_80GB, 0x233110DE: H100_80GB, 0x232210DE: H100_80GB, 0x232410DE: H100_80GB,
    0x233510DE: H200_141GB, 0x233B10DE: H200_141GB,
}


def profile_table(gpu: GPU) -> ProfileTable | None:
    return TABLES.get(gpu.pci_device_id) if gpu.mig_capable else None
