"""The device plugin's view (its state file) as kgpu series: health, allocations, sharing, MPS limits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import GPU0, GPU1, samples, write_node

from kgpu.deviceplugin.statefile import PluginState, write_state
from kgpu.exporter import ExporterOptions, GPUCollector, load_counters
from kgpu.exporter.attribution import ContainerDevices
from kgpu.exporter.pluginstate import PluginStateFile
from kgpu.gpu import open_backend


def device(id: str, gpu: str, *, replica: int | None = None, health: str = "Healthy", reason: str = "",
           allocations: int = 0, mps: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "gpu_uuid": gpu, "replica": replica, "numa_node": 0, "health": health,
                           "reason": reason, "allocations": allocations}
    if mps is not None:
        out["mps"] = mps
    return out


def state(*resources: dict[str, Any]) -> PluginState:
    """The state file in the shape the plugin writes (parsed by the contract both sides share)."""
    return PluginState.from_json({"version": 1, "pid": 1, "updated": "2026-01-01T12:00:00.000Z",
                                  "kubelet_dir": "/var/lib/kubelet/device-plugins", "health_policy": "",
                                  "resources": list(resources)}, "test state")


def scrape(tmp_path: Path, state_path: Path, pods: list[ContainerDevices] | None = None) -> str:
    class Pods:
        description = "test kubelet"

        def available(self) -> bool:
            return pods is not None

        def list(self) -> list[ContainerDevices]:
            return pods or []

        def close(self) -> None:
            pass

    collector = GPUCollector(open_backend(simulate=write_node(tmp_path)), ExporterOptions(load_counters(None)),
                             pod_devices=Pods(), plugin_state=PluginStateFile(state_path))
    try:
        return collector.render()
    finally:
        collector.close()


def by_device(text: str, family: str) -> dict[str, float]:
    return {labels["device_id"]: value for labels, value in samples(text).get(family, [])}


def test_health_and_allocations_per_advertised_device(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, state(
        {"name": "nvidia.com/gpu", "socket": "nvidia-gpu.sock", "registered": True, "registrations": 1, "devices": [
            device(GPU0, GPU0, allocations=2),
            device(GPU1, GPU1, health="Unhealthy", reason="XID 79", allocations=1),
        ]},
    ))
    text = scrape(tmp_path, path)
    assert by_device(text, "kgpu_device_plugin_device_healthy") == {GPU0: 1, GPU1: 0}
    assert by_device(text, "kgpu_device_plugin_device_allocations") == {GPU0: 2, GPU1: 1}
    assert "# TYPE kgpu_device_plugin_device_allocations_total counter\n" in text
    (labels, _), *_ = samples(text)["kgpu_device_plugin_device_healthy"]
    # The GPU's dcgm-exporter labels (no host name was given here), then which device of which resource.
    assert list(labels) == ["gpu", "UUID", "pci_bus_id", "device", "modelName", "resource", "device_id"]
    assert samples(text)["kgpu_device_plugin_resource_registered"] == [({"resource": "nvidia.com/gpu"}, 1)]


def test_shared_replicas_and_mps_slice_limits(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    slices = [device(f"{GPU0}::gpu-20gb-{n}", GPU0, replica=n, mps={"memory_mib": 20480, "compute_percent": 25})
              for n in range(3)]
    write_state(path, state(
        {"name": "nvidia.com/gpu-20gb", "socket": "s.sock", "registered": True, "registrations": 1, "devices": slices},
    ))
    pods = [ContainerDevices("ml", "trainer", "main", "nvidia.com/gpu-20gb", (f"{GPU0}::gpu-20gb-1",))]
    text = scrape(tmp_path, path, pods)
    advertised = samples(text)["kgpu_gpu_advertised_devices"]
    assert [(labels["UUID"], labels["resource"], value) for labels, value in advertised] == [
        (GPU0, "nvidia.com/gpu-20gb", 3)
    ]
    assert set(by_device(text, "kgpu_mps_slice_pinned_memory_limit_mib").values()) == {20480}
    assert set(by_device(text, "kgpu_mps_slice_active_thread_percentage").values()) == {25}
    # A container holding an MPS slice is attributed to the slice's GPU.
    temps = [labels for labels, _ in samples(text)["DCGM_FI_DEV_GPU_TEMP"] if labels["UUID"] == GPU0]
    assert [(t["pod"], t["container"]) for t in temps] == [("trainer", "main")]


def test_no_state_file_no_plugin_series(tmp_path: Path) -> None:
    text = scrape(tmp_path, tmp_path / "absent.json")
    assert "kgpu_device_plugin" not in text
    assert "DCGM_FI_DEV_GPU_TEMP" in text


def test_a_garbled_state_file_is_reported_once_and_costs_only_its_series(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "resources": [{"name": "nvidia.com/gpu"}]}')
    reader = PluginStateFile(path)
    with caplog.at_level(logging.WARNING):
        assert reader.read() is None
        assert reader.read() is None
    assert len([r for r in caplog.records if "device plugin state unreadable" in r.getMessage()]) == 1
    text = scrape(tmp_path, path)
    assert "kgpu_device_plugin" not in text and "DCGM_FI_DEV_GPU_TEMP" in text


def test_a_newer_state_version_is_refused_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 2, "resources": []}')
    with caplog.at_level(logging.WARNING):
        assert PluginStateFile(path).read() is None
    assert "version 2; this kgpu reads version 1" in caplog.text
