"""The DCGM fields kgpu can publish from NVML readings, and how each is read.

A field's *scope* says what DCGM reports for it on a MIG GPU instance: ``device`` fields
(clocks, temperatures, power, ...) carry the whole GPU's value on every instance series,
``instance`` fields (frame buffer) are the instance's own, and ``gpu_only`` fields
(the utilization counters) are not reported for MIG at all, as in DCGM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from kgpu.gpu.model import GPUReadings

Value = int | float


class Scope(Enum):
    DEVICE = "device"
    INSTANCE = "instance"
    GPU_ONLY = "gpu_only"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    scope: Scope
    read: Callable[[GPUReadings], Value | None]
    """Value from the GPU's readings; None when the GPU does not provide it (no series then)."""
    double: bool = False
    """DCGM stores the field as a double; dcgm-exporter prints those with six decimals."""


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


XID_FIELD = "DCGM_FI_DEV_XID_ERRORS"
"""Read from the health stream (the last XID seen), not from the readings."""
FB_TOTAL_FIELD = "DCGM_FI_DEV_FB_TOTAL"
"""The inventory's memory size (NVML's total, as nvidia-smi prints memory.total), not a sensor."""
NVLINK_BANDWIDTH_FIELD = "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"
"""A rate between two scrapes of the NVLink data counters (:mod:`kgpu.exporter.nvlink`), not one reading."""

_ALL = (
    Field("DCGM_FI_DEV_SM_CLOCK", Scope.DEVICE, lambda r: r.sm_clock_mhz),
    Field("DCGM_FI_DEV_MEM_CLOCK", Scope.DEVICE, lambda r: r.memory_clock_mhz),
    Field("DCGM_FI_DEV_MEMORY_TEMP", Scope.DEVICE, lambda r: r.memory_temperature_c),
    Field("DCGM_FI_DEV_GPU_TEMP", Scope.DEVICE, lambda r: r.temperature_c),
    Field("DCGM_FI_DEV_POWER_USAGE", Scope.DEVICE, lambda r: r.power_w, double=True),
    Field("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Scope.DEVICE, lambda r: r.total_energy_mj),
    Field("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", Scope.DEVICE, lambda r: r.pcie_replay_counter),
    Field("DCGM_FI_DEV_GPU_UTIL", Scope.GPU_ONLY, lambda r: r.gpu_utilization_percent),
    Field("DCGM_FI_DEV_MEM_COPY_UTIL", Scope.GPU_ONLY, lambda r: r.memory_copy_utilization_percent),
    Field("DCGM_FI_DEV_ENC_UTIL", Scope.GPU_ONLY, lambda r: r.encoder_utilization_percent),
    Field("DCGM_FI_DEV_DEC_UTIL", Scope.GPU_ONLY, lambda r: r.decoder_utilization_percent),
    Field(XID_FIELD, Scope.DEVICE, lambda r: None),
    Field("DCGM_FI_DEV_FB_FREE", Scope.INSTANCE, lambda r: r.memory_free_mib),
    Field("DCGM_FI_DEV_FB_USED", Scope.INSTANCE, lambda r: r.memory_used_mib),
    Field(FB_TOTAL_FIELD, Scope.INSTANCE, lambda r: None),
    Field("DCGM_FI_DEV_FB_RESERVED", Scope.INSTANCE, lambda r: r.memory_reserved_mib),
    Field("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", Scope.DEVICE, lambda r: r.uncorrectable_remapped_rows),
    Field("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", Scope.DEVICE, lambda r: r.correctable_remapped_rows),
    Field("DCGM_FI_DEV_ROW_REMAP_FAILURE", Scope.DEVICE, lambda r: _flag(r.row_remap_failure)),
    Field(NVLINK_BANDWIDTH_FIELD, Scope.DEVICE, lambda r: None),
    Field("DCGM_FI_DEV_VGPU_LICENSE_STATUS", Scope.DEVICE, lambda r: r.vgpu_license_status),
)

FIELDS: dict[str, Field] = {f.name: f for f in _ALL}

LABEL_FIELDS = frozenset({"DCGM_FI_DRIVER_VERSION"})
"""Fields kgpu can publish as labels (``FIELD, label, help``)."""

# Real DCGM fields a dcgm-exporter counters file may list that need DCGM itself (profiling
# counters, NVLink/PCIe byte counters, violation timers, ...). kgpu skips them with a warning so
# an existing dcgm-exporter CSV works unchanged; anything else unknown is an error.
NOT_PROVIDED = frozenset({
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
    "DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_THERMAL_VIOLATION", "DCGM_FI_DEV_SYNC_BOOST_VIOLATION",
    "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", "DCGM_FI_DEV_LOW_UTIL_VIOLATION", "DCGM_FI_DEV_RELIABILITY_VIOLATION",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "DCGM_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_DBE",
    "DCGM_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_NVLINK_BANDWIDTH_L0",
    "DCGM_FI_DEV_FB_USED_PERCENT",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_PSTATE",
    "DCGM_FI_DEV_SLOWDOWN_TEMP", "DCGM_FI_DEV_SHUTDOWN_TEMP", "DCGM_FI_DEV_POWER_MGMT_LIMIT",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "DCGM_FI_DEV_FAN_SPEED", "DCGM_FI_DEV_COUNT",
    "DCGM_FI_DEV_BAR1_TOTAL", "DCGM_FI_DEV_BAR1_USED", "DCGM_FI_DEV_BAR1_FREE",
    "DCGM_FI_DEV_MAX_SM_CLOCK", "DCGM_FI_DEV_MAX_MEM_CLOCK", "DCGM_FI_DEV_VIDEO_CLOCK",
    "DCGM_FI_DEV_APP_SM_CLOCK", "DCGM_FI_DEV_APP_MEM_CLOCK",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_OCCUPANCY",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
    "DCGM_FI_PROF_PIPE_FP32_ACTIVE", "DCGM_FI_PROF_PIPE_FP16_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES", "DCGM_FI_PROF_NVLINK_TX_BYTES", "DCGM_FI_PROF_NVLINK_RX_BYTES",
    "DCGM_FI_PROF_PIPE_TENSOR_IMMA_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_HMMA_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_DFMA_ACTIVE", "DCGM_FI_PROF_PIPE_INT_ACTIVE",
    "DCGM_FI_NVML_VERSION", "DCGM_FI_DEV_BRAND", "DCGM_FI_DEV_SERIAL", "DCGM_FI_DEV_OEM_INFOROM_VER",
    "DCGM_FI_DEV_ECC_INFOROM_VER", "DCGM_FI_DEV_POWER_INFOROM_VER", "DCGM_FI_DEV_INFOROM_IMAGE_VER",
    "DCGM_FI_DEV_VBIOS_VERSION", "DCGM_FI_CUDA_DRIVER_VERSION", "DCGM_FI_DEV_NAME",
    "DCGM_FI_DEV_MINOR_NUMBER", "DCGM_FI_DEV_UUID", "DCGM_FI_DEV_PCI_BUSID",
    "DCGM_EXP_XID_ERRORS_COUNT", "DCGM_EXP_CLOCK_EVENTS_COUNT", "DCGM_EXP_GPU_HEALTH_STATUS",
    "DCGM_EXP_P2P_STATUS",
})
