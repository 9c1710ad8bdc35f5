"""A scrape of `kgpu exporter` reads like dcgm-exporter's: names, types, labels in order, units, values."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from exporter_helpers import GPU0, GPU1, samples, series_of, write_node

from kgpu.daemon import Backoff, Watcher
from kgpu.exporter import ExporterOptions, GPUCollector, load_counters, parse_counters
from kgpu.exporter.xid import XidTracker
from kgpu.gpu import BackendError, HealthEvent, HealthEventKind, open_backend
from kgpu.gpu.health import HealthFeed
from kgpu.gpu.simulated import inject_event

DCGM_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"]
REQUIRED = {
    "DCGM_FI_DEV_SM_CLOCK": "gauge", "DCGM_FI_DEV_MEM_CLOCK": "gauge", "DCGM_FI_DEV_GPU_TEMP": "gauge",
    "DCGM_FI_DEV_MEMORY_TEMP": "gauge", "DCGM_FI_DEV_POWER_USAGE": "gauge",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "counter", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "counter",
    "DCGM_FI_DEV_GPU_UTIL": "gauge", "DCGM_FI_DEV_MEM_COPY_UTIL": "gauge", "DCGM_FI_DEV_ENC_UTIL": "gauge",
    "DCGM_FI_DEV_DEC_UTIL": "gauge", "DCGM_FI_DEV_XID_ERRORS": "gauge", "DCGM_FI_DEV_FB_FREE": "gauge",
    "DCGM_FI_DEV_FB_USED": "gauge", "DCGM_FI_DEV_FB_TOTAL": "gauge", "DCGM_FI_DEV_FB_RESERVED": "gauge",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "counter", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "counter",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "gauge",
}


def scrape(node: str, **options: object) -> str:
    backend = open_backend(simulate=node)
    collector = GPUCollector(backend, ExporterOptions(load_counters(None), hostname="node-a", **options))  # type: ignore[arg-type]
    try:
        return collector.render()
    finally:
        collector.close()


def test_every_dcgm_default_field_has_its_exact_name_and_type(tmp_path: Path) -> None:
    text = scrape(write_node(tmp_path))
    for name, kind in REQUIRED.items():
        assert f"# TYPE {name} {kind}\n" in text, name
        assert re.search(rf"^{name}\{{", text, re.MULTILINE), name
    # dcgm-exporter adds no _total suffix to its counters, and neither do we.
    assert not re.search(r"^DCGM_FI_\w+_total[{ ]", text, re.MULTILINE)
    assert "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n" in text


def test_labels_come_in_dcgm_exporter_order(tmp_path: Path) -> None:
    text = scrape(write_node(tmp_path))
    for name in REQUIRED:
        (labels, _), *_ = series_of(text, name, GPU0) or [({}, 0)]
        if name == "DCGM_FI_DEV_XID_ERRORS":
            assert list(labels) == [*DCGM_LABELS, "err_code", "err_msg"]
        else:
            assert list(labels) == DCGM_LABELS, name
    (labels, _), = series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU0)
    assert labels == {
        "gpu": "0", "UUID": GPU0, "pci_bus_id": "00000000:18:00.0", "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-a", "DCGM_FI_DRIVER_VERSION": "580.95.05",
    }


def test_values_and_units_match_what_the_gpu_reports(tmp_path: Path) -> None:
    text = scrape(write_node(tmp_path))
    expected = {
        "DCGM_FI_DEV_SM_CLOCK": 1980, "DCGM_FI_DEV_MEM_CLOCK": 2619, "DCGM_FI_DEV_GPU_TEMP": 64,
        "DCGM_FI_DEV_MEMORY_TEMP": 71, "DCGM_FI_DEV_POWER_USAGE": 512.25,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 987654321, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 2,
        "DCGM_FI_DEV_GPU_UTIL": 87, "DCGM_FI_DEV_MEM_COPY_UTIL": 41, "DCGM_FI_DEV_ENC_UTIL": 3,
        "DCGM_FI_DEV_DEC_UTIL": 5, "DCGM_FI_DEV_XID_ERRORS": 0,
        # MiB: used 40000 + reserved 559 + free 41000 = the card's 81559 MiB.
        "DCGM_FI_DEV_FB_USED": 40000, "DCGM_FI_DEV_FB_RESERVED": 559, "DCGM_FI_DEV_FB_FREE": 41000,
        "DCGM_FI_DEV_FB_TOTAL": 81559, "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 1,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0, "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
    }
    parsed = samples(text)
    for name, value in expected.items():
        # The Python parser renames counters to *_total; the text itself (checked above) does not.
        family = name.removesuffix("_total")
        values = [v for labels, v in parsed[family] if labels["UUID"] == GPU0]
        assert values == [value], name
    # Integers print as integers, DCGM doubles with six decimals, as dcgm-exporter prints them.
    assert re.search(r'^DCGM_FI_DEV_GPU_TEMP\{gpu="0",.*\} 64$', text, re.MULTILINE)
    assert re.search(r'^DCGM_FI_DEV_POWER_USAGE\{gpu="0",.*\} 512\.250000$', text, re.MULTILINE)


def test_mig_instances_get_their_own_series_with_profile_and_instance_id() -> None:
    backend = open_backend(simulate="a100-mig")
    gpu0 = backend.inventory().gpus[0]
    text = scrape("a100-mig")
    temps = series_of(text, "DCGM_FI_DEV_GPU_TEMP", gpu0.uuid)
    assert [(labels["GPU_I_PROFILE"], labels["GPU_I_ID"]) for labels, _ in temps] == [
        (m.profile, str(m.gpu_instance_id)) for m in gpu0.mig_devices
    ]
    assert list(temps[0][0]) == [*DCGM_LABELS[:5], "GPU_I_PROFILE", "GPU_I_ID", *DCGM_LABELS[5:]]
    # Utilization is not reported for MIG instances (as in DCGM); each instance reports its own memory size.
    assert series_of(text, "DCGM_FI_DEV_GPU_UTIL", gpu0.uuid) == []
    totals = [v for _, v in series_of(text, "DCGM_FI_DEV_FB_TOTAL", gpu0.uuid)]
    assert totals == [m.memory_total_mib for m in gpu0.mig_devices]
    # The GPU without MIG keeps whole-GPU series without MIG labels.
    gpu1 = backend.inventory().gpus[1]
    (labels, _), = series_of(text, "DCGM_FI_DEV_GPU_UTIL", gpu1.uuid)
    assert "GPU_I_PROFILE" not in labels


@pytest.mark.parametrize(("mode", "label"), [("Hostname", "Hostname"), ("hostname", "hostname"), ("none", None)])
def test_host_name_label_modes(tmp_path: Path, mode: str, label: str | None) -> None:
    text = scrape(write_node(tmp_path), hostname_label=mode)
    (labels, _), = series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU0)
    expected = DCGM_LABELS[:5] + ([label] if label else []) + ["DCGM_FI_DRIVER_VERSION"]
    assert list(labels) == expected
    if label:
        assert labels[label] == "node-a"


def test_a_failing_gpu_loses_its_series_and_counts_errors_but_the_scrape_succeeds(tmp_path: Path) -> None:
    backend = open_backend(simulate=write_node(tmp_path, gpu1_fails=True))
    collector = GPUCollector(backend, ExporterOptions(load_counters(None), hostname="node-a"))
    try:
        collector.render()
        text = collector.render()
    finally:
        collector.close()
    assert series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU1) == []
    assert [v for _, v in series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU0)] == [64]
    assert [v for _, v in series_of(text, "kgpu_gpu_read_errors", GPU1)] == [2]
    assert [v for _, v in series_of(text, "kgpu_gpu_read_errors", GPU0)] == [0]
    assert [v for _, v in series_of(text, "kgpu_gpu_read_ok", GPU1)] == [0]
    assert "# TYPE kgpu_gpu_read_errors_total counter\n" in text


def test_a_gpu_that_falls_off_the_bus_disappears_and_comes_back(tmp_path: Path) -> None:
    from kgpu.gpu.simulated import inject_event

    events = tmp_path / "events.jsonl"
    events.touch()
    backend = open_backend(simulate=write_node(tmp_path), simulate_events=events)
    collector = GPUCollector(backend, ExporterOptions(load_counters(None)))
    try:
        assert series_of(collector.render(), "DCGM_FI_DEV_GPU_TEMP", GPU0)
        inject_event(events, GPU0, "lost")
        assert series_of(collector.render(), "DCGM_FI_DEV_GPU_TEMP", GPU0) == []
        inject_event(events, GPU0, "recovered")
        text = collector.render()
    finally:
        collector.close()
    assert series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU0)
    assert [v for _, v in series_of(text, "kgpu_gpu_read_errors", GPU0)] == [1]


class _SlowBackend:
    """The simulated node, except that one GPU never answers until the test lets it (a hung NVML call)."""

    def __init__(self, inner: object, slow_uuid: str, release: object) -> None:
        self._inner = inner
        self._slow = slow_uuid
        self._release = release
        self.name = "slow"
        self.slow_reads_returned = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def readings(self, uuid: str) -> object:
        if uuid == self._slow:
            self._release.wait(60)  # type: ignore[attr-defined]  # 60 s only if the test fails
            self.slow_reads_returned += 1
        return self._inner.readings(uuid)  # type: ignore[attr-defined]


def test_a_hung_gpu_costs_its_series_not_the_scrape(tmp_path: Path) -> None:
    import threading
    import time

    release = threading.Event()
    backend = _SlowBackend(open_backend(simulate=write_node(tmp_path)), GPU1, release)
    # Each scrape waits up to read_timeout for the GPUs: GPU0 answers at once, however loaded the machine is;
    # GPU1 not until it is released.
    collector = GPUCollector(backend, ExporterOptions(load_counters(None)), read_timeout=2.0)  # type: ignore[arg-type]
    try:
        first = collector.render()
        second = collector.render()  # the hung read has not returned: not asked again, counted again
        # Both scrapes came back while GPU1's read was still hung: neither waited for it
        returned_during_scrapes = backend.slow_reads_returned
        release.set()
        deadline = time.monotonic() + 30
        while True:  # once the hung call returns, the GPU is read again
            third = collector.render()
            if series_of(third, "DCGM_FI_DEV_GPU_TEMP", GPU1) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        release.set()
        collector.close()
    assert returned_during_scrapes == 0
    assert series_of(first, "DCGM_FI_DEV_GPU_TEMP", GPU1) == []
    assert series_of(first, "DCGM_FI_DEV_GPU_TEMP", GPU0)
    assert series_of(second, "DCGM_FI_DEV_GPU_TEMP", GPU0)
    assert [v for _, v in series_of(second, "kgpu_gpu_read_errors", GPU1)] == [2]
    assert series_of(third, "DCGM_FI_DEV_GPU_TEMP", GPU1)


def test_xid_errors_report_the_last_xid_with_its_code_and_meaning(tmp_path: Path) -> None:
    backend = open_backend(simulate=write_node(tmp_path))
    xids = XidTracker(backend.inventory())
    xids.record(HealthEvent(GPU0, HealthEventKind.XID, xid=13))
    xids.record(HealthEvent(GPU0, HealthEventKind.XID, xid=79))
    xids.record(HealthEvent(GPU0, HealthEventKind.LOST))
    collector = GPUCollector(backend, ExporterOptions(load_counters(None)), xids=xids)
    try:
        text = collector.render()
    finally:
        collector.close()
    (labels, value), = series_of(text, "DCGM_FI_DEV_XID_ERRORS", GPU0)
    assert value == 79
    assert (labels["err_code"], labels["err_msg"]) == ("79", "GPU has fallen off the bus")
    (labels, value), = series_of(text, "DCGM_FI_DEV_XID_ERRORS", GPU1)
    assert (value, labels["err_code"], labels["err_msg"]) == (0, "0", "No Error")
    assert [v for _, v in series_of(text, "kgpu_gpu_last_xid", GPU0)] == [79]
    assert [v for _, v in series_of(text, "kgpu_gpu_xid_errors", GPU0)] == [2]


def test_xids_on_a_mig_device_count_for_its_gpu() -> None:
    backend = open_backend(simulate="a100-mig")
    inventory = backend.inventory()
    mig = inventory.mig_devices[0]
    xids = XidTracker(inventory)
    xids.record(HealthEvent(mig.uuid, HealthEventKind.XID, xid=31))
    record = xids.last(mig.parent_uuid)
    assert record is not None and record.xid == 31


class FlakyFeed:
    """A health feed whose first poll fails, as an NVML wait can."""

    def __init__(self, feed: HealthFeed) -> None:
        self.feed = feed
        self.failed = False

    def poll(self, timeout: float) -> list[HealthEvent]:
        if not self.failed:
            self.failed = True
            raise BackendError("waiting for NVML events failed: Unknown Error")
        return self.feed.poll(timeout)

    def close(self) -> None:
        self.feed.close()


def test_the_xid_counter_survives_poison_lines_and_a_failing_feed(tmp_path: Path) -> None:
    # Given an events file that starts with lines that are no health events, then a real XID
    events = tmp_path / "events.jsonl"
    events.write_text('{"uuid": ["GPU-x"], "kind": "xid", "xid": 79}\n' + "[" * 100_000 + "\n"
                      f'{{"uuid": "{GPU1}", "kind": "xid", "xid": true}}\n')
    inject_event(events, GPU1, "xid", xid=48)
    backend = open_backend(simulate=write_node(tmp_path), simulate_events=events)
    xids = XidTracker(backend.inventory())
    # When the exporter's watcher follows a feed whose first poll fails
    stop = threading.Event()
    watcher = Watcher("xid", xids.follow(FlakyFeed(backend.health_feed())), interval=0.0,
                      backoff=Backoff(initial=0.01)).start(stop)
    try:
        deadline = time.monotonic() + 30
        while xids.last(GPU1) is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        watcher.join(timeout=5)
    # Then the counter has the real XID, counted once
    record = xids.last(GPU1)
    assert record is not None and (record.xid, record.count) == (48, 1)
    assert watcher.status().failures == 1


def test_a_counters_file_selects_and_orders_the_families(tmp_path: Path) -> None:
    counters = parse_counters(
        "# my selection\nDCGM_FI_DEV_FB_USED, gauge, used\nDCGM_FI_DEV_GPU_TEMP, gauge, temp\n", "mine.csv"
    )
    backend = open_backend(simulate=write_node(tmp_path))
    collector = GPUCollector(backend, ExporterOptions(counters, hostname="n"))
    try:
        text = collector.render()
    finally:
        collector.close()
    dcgm = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE DCGM_")]
    assert dcgm == ["DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP"]
    # Without the DCGM_FI_DRIVER_VERSION label line, the label is absent, as in dcgm-exporter.
    (labels, _), = series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU0)
    assert "DCGM_FI_DRIVER_VERSION" not in labels


def test_the_collector_also_plugs_into_a_prometheus_client_registry(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    collector = GPUCollector(open_backend(simulate=write_node(tmp_path)), ExporterOptions(load_counters(None)))
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
    finally:
        collector.close()
    assert [v for _, v in series_of(text, "DCGM_FI_DEV_GPU_TEMP", GPU0)] == [64]
    assert [v for _, v in series_of(text, "kgpu_gpu_read_errors", GPU1)] == [0]
