"""DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL and DCGM_FI_DEV_VGPU_LICENSE_STATUS from NVML, as DCGM computes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgpu.exporter import DEFAULT_COUNTERS_CSV, parse_counters
from kgpu.exporter.collector import GPUCollector
from kgpu.exporter.nvlink import NvlinkRates
from kgpu.exporter.snapshot import ExporterOptions
from kgpu.gpu.backend import open_backend

DCGM_EXPORTER_LINES = (  # etc/default-counters.csv of dcgm-exporter, verbatim
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL,            counter, Total number of NVLink bandwidth counters for all lanes.",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS, gauge, vGPU License status",
)


def test_both_are_in_the_built_in_list_with_dcgm_exporters_type_and_help() -> None:
    assert all(line in DEFAULT_COUNTERS_CSV for line in DCGM_EXPORTER_LINES)
    counters = {c.field: c for c in parse_counters("\n".join(DCGM_EXPORTER_LINES), "default-counters.csv").metrics}
    assert (counters["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"].prom_type,
            counters["DCGM_FI_DEV_VGPU_LICENSE_STATUS"].prom_type) == ("counter", "gauge")


def test_nvlink_bandwidth_is_the_counters_change_per_second_over_1000_and_zero_at_first() -> None:
    # DCGM's ReadAndCacheNvLinkBandwidth: (RX+TX KiB now - before) / seconds / 1000; 0 first, 0 for a zero counter.
    rates = NvlinkRates()
    assert rates.update({"GPU-a": 5_000_000, "GPU-b": None}, now=100.0) == {"GPU-a": 0}
    assert rates.update({"GPU-a": 9_000_000, "GPU-b": None}, now=102.0) == {"GPU-a": 2000}
    assert rates.update({"GPU-a": 9_000_000}, now=103.0) == {"GPU-a": 0}  # idle
    assert rates.update({"GPU-a": 0}, now=104.0) == {"GPU-a": 0}


def scrape(collector: GPUCollector) -> str:
    return collector.render()


@pytest.mark.parametrize(("fixture", "series"), [("h100x8", 8), ("t4", 0)])
def test_a_scrape_publishes_nvlink_for_gpus_with_nvlink_and_the_license_for_every_gpu(
        fixture: str, series: int) -> None:
    collector = GPUCollector(open_backend(simulate=fixture), ExporterOptions(parse_counters(DEFAULT_COUNTERS_CSV,
                                                                                           "built-in")))
    text = scrape(collector)
    # (a GPU without NVLink has no series, as with DCGM, whose NVML read fails there)
    assert ("# TYPE DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL counter" in text) is (series > 0)
    assert "# HELP DCGM_FI_DEV_VGPU_LICENSE_STATUS vGPU License status" in text
    nvlink = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{")]
    assert len(nvlink) == series and all(line.endswith(" 0") for line in nvlink)
    gpus = len(collector.inventory.gpus)
    licence = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_VGPU_LICENSE_STATUS{")]
    assert len(licence) == gpus and all(line.endswith(" 0") for line in licence)  # bare metal: not licensed


def test_a_fixture_sets_the_counter_and_the_license(tmp_path: Path) -> None:
    import yaml

    from kgpu.gpu.fixture import read_fixture_text

    _, text = read_fixture_text("h100x8")
    doc = yaml.safe_load(text)
    doc["gpus"][0].setdefault("readings", {}).update({"nvlink_data_kib": 4000, "vgpu_license_status": 1})
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(doc))
    readings = open_backend(simulate=str(path)).readings(doc["gpus"][0]["uuid"])
    assert (readings.nvlink_data_kib, readings.vgpu_license_status) == (4000, 1)
