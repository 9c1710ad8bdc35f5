"""The counter list: which fields the exporter publishes, in dcgm-exporter's CSV format.

Each non-comment line is ``FIELD, type, help``: a DCGM field name, ``gauge``, ``counter`` or
``label`` (the field's value becomes a label on every series, as ``DCGM_FI_DRIVER_VERSION`` does),
and the HELP text. Lines starting with ``#`` are comments. A dcgm-exporter CSV works unchanged:
fields that need DCGM itself (profiling, NVLink error counters, ...) are skipped with a warning.

Example::

    counters = parse_counters(DEFAULT_COUNTERS_CSV, "built-in")
    [c.field for c in counters.metrics][:2]   # ['DCGM_FI_DEV_SM_CLOCK', 'DCGM_FI_DEV_MEM_CLOCK']
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from kgpu.errors import ConfigError
from kgpu.exporter.fields import FIELDS, LABEL_FIELDS, NOT_PROVIDED
from kgpu.fsio import read_text

PROM_TYPES = ("gauge", "counter", "label")

# dcgm-exporter's etc/default-counters.csv, restricted to what NVML provides, plus the frame-buffer
# total/reserved fields and the driver-version label its Helm chart and the GPU Operator ship.
DEFAULT_COUNTERS_CSV = """\
# Format
# If line starts with a '#' it is considered a comment
# DCGM FIELD, Prometheus metric type, help message

# Clocks
DCGM_FI_DEV_SM_CLOCK,  gauge, SM clock frequency (in MHz).
DCGM_FI_DEV_MEM_CLOCK, gauge, Memory clock frequency (in MHz).

# Temperature
DCGM_FI_DEV_MEMORY_TEMP, gauge, Memory temperature (in C).
DCGM_FI_DEV_GPU_TEMP,    gauge, GPU temperature (in C).

# Power
DCGM_FI_DEV_POWER_USAGE,              gauge, Power draw (in W).
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, counter, Total energy consumption since boot (in mJ).

# PCIE
DCGM_FI_DEV_PCIE_REPLAY_COUNTER, counter, Total number of PCIe retries.

# Utilization (the sample period varies depending on the product)
DCGM_FI_DEV_GPU_UTIL,      gauge, GPU utilization (in %).
DCGM_FI_DEV_MEM_COPY_UTIL, gauge, Memory utilization (in %).
DCGM_FI_DEV_ENC_UTIL,      gauge, Encoder utilization (in %).
DCGM_FI_DEV_DEC_UTIL ,     gauge, Decoder utilization (in %).

# Errors and violations
DCGM_FI_DEV_XID_ERRORS, gauge, Value of the last XID error encountered.

# Memory usage
DCGM_FI_DEV_FB_FREE,     gauge, Framebuffer memory free (in MiB).
DCGM_FI_DEV_FB_USED,     gauge, Framebuffer memory used (in MiB).
DCGM_FI_DEV_FB_TOTAL,    gauge, Framebuffer memory total (in MiB).
DCGM_FI_DEV_FB_RESERVED, gauge, Framebuffer memory reserved (in MiB).

# NVLink
DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL,            counter, Total number of NVLink bandwidth counters for all lanes.

# VGPU License status
DCGM_FI_DEV_VGPU_LICENSE_STATUS, gauge, vGPU License status

# Remapped rows
DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS, counter, Number of remapped rows for uncorrectable errors
DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS,   counter, Number of remapped rows for correctable errors
DCGM_FI_DEV_ROW_REMAP_FAILURE,           gauge,   Whether remapping of rows has failed

# Static configuration information. These appear as labels on the other metrics
DCGM_FI_DRIVER_VERSION, label, Driver Version
"""


@dataclass(frozen=True, slots=True)
class Counter:
    field: str
    """The DCGM field name, which is also the metric name (dcgm-exporter adds no suffix)."""
    prom_type: str
    """``gauge``, ``counter`` or ``label``."""
    help: str


@dataclass(frozen=True, slots=True)
class CounterSet:
    metrics: tuple[Counter, ...]
    """Fields published as series, in file order."""
    labels: tuple[Counter, ...]
    """Fields published as a label on every DCGM series (e.g. ``DCGM_FI_DRIVER_VERSION``)."""
    skipped: tuple[str, ...] = ()
    """Real DCGM fields the file asks for that kgpu cannot read without DCGM, as ``file:line FIELD``."""


def parse_counters(text: str, source: str) -> CounterSet:
    """Parse a counters CSV; raises ConfigError naming ``source:line``, the field and what is allowed."""
    metrics: list[Counter] = []
    labels: list[Counter] = []
    skipped: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            record = next(csv.reader([line], skipinitialspace=True))
        except csv.Error as exc:
            raise ConfigError(f"{where}: not a CSV record ({exc}): {stripped!r}") from exc
        record = [part.strip() for part in record]
        if len(record) != 3:
            raise ConfigError(
                f"{where}: expected 3 fields 'DCGM_FIELD, gauge|counter|label, help text', "
                f"got {len(record)}: {stripped!r} (quote a help text that contains commas)"
            )
        field, prom_type, help_text = record
        if prom_type not in PROM_TYPES:
            raise ConfigError(f"{where}: {field}: metric type {prom_type!r} is not one of {', '.join(PROM_TYPES)}")
        if field in NOT_PROVIDED:
            skipped.append(f"{where} {field}")
            continue
        known = LABEL_FIELDS if prom_type == "label" else FIELDS
        if field not in known:
            if field in FIELDS or field in LABEL_FIELDS:
                kind = "a label" if field in LABEL_FIELDS else "a gauge or counter"
                raise ConfigError(f"{where}: {field} can only be published as {kind}, not {prom_type!r}")
            allowed = ", ".join(sorted(FIELDS) + sorted(LABEL_FIELDS))
            raise ConfigError(f"{where}: unknown field {field!r}; kgpu provides: {allowed}")
        if field in seen:
            raise ConfigError(f"{where}: {field} is already listed on line {seen[field]}")
        seen[field] = number
        (labels if prom_type == "label" else metrics).append(Counter(field, prom_type, help_text))
    return CounterSet(metrics=tuple(metrics), labels=tuple(labels), skipped=tuple(skipped))


def load_counters(path: Path | None) -> CounterSet:
    """The counters from ``path`` (``--collect``), or kgpu's default list."""
    if path is None:
        return parse_counters(DEFAULT_COUNTERS_CSV, "built-in default counters")
    text = read_text(path, f"--collect {path}")
    counters = parse_counters(text, str(path))
    if not counters.metrics:
        raise ConfigError(f"{path}: lists no field kgpu can publish; see 'kgpu exporter --print-default-counters'")
    return counters
