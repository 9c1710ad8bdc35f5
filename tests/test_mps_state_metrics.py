"""MPS slice limits agree end to end: layout, Allocate, the device plugin's state file, the exporter, labels.

Given a slices config on the simulated h100x8, the device plugin writes its state file as it does when
serving; the exporter scrapes it; the labeler labels the node. Every slice's limits must be the same
number in each place.
"""

from __future__ import annotations

from pathlib import Path

from dp_helpers import build_logic
from exporter_helpers import samples

from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.health import HealthTracker
from kgpu.deviceplugin.plugin import DevicePlugin, PluginSettings
from kgpu.exporter import ExporterOptions, GPUCollector, load_counters
from kgpu.exporter.pluginstate import PluginStateFile
from kgpu.gpu import open_backend
from kgpu.labels import HostFacts, node_labels
from kgpu.labels.config import resolve_settings
from kgpu.sharing.allocation import ENV_MEM_LIMIT, ENV_THREADS
from kgpu.sharing.layout import build_layout

CONFIG = """\
version: v1
sharing:
  mps:
    resources:
    - {name: nvidia.com/gpu, replicas: 4, devices: [7]}
    slices:
    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 30, count: 2, devices: [0, 1]}
    - {name: nvidia.com/gpu-10gb, memory: 10000Mi, computePercent: 12, count: 3, devices: [0]}
    - {name: nvidia.com/gpu-40gb, memory: 40Gi, computePercent: 50, count: 1, devices: [2]}
"""


def test_slice_limits_are_the_same_in_the_layout_allocate_state_file_metrics_and_labels(tmp_path: Path) -> None:
    # Given kgpu's device plugin for a slices config on an h100x8 node, writing its state file
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    config = resolve_config({}, {}, path)
    backend = open_backend(simulate="h100x8")
    inventory = backend.inventory()
    logic = build_logic(inventory, config)
    state_file = tmp_path / "state.json"
    plugin = DevicePlugin(logic, HealthTracker(), PluginSettings(kubelet_dir=tmp_path / "dp", state_file=state_file))
    plugin.write_state()
    assert config.sharing.mps is not None
    layout = build_layout(inventory, config.sharing.mps)
    expected = {s.id: (s.memory_mib, s.compute_percent) for s in layout.slices}
    assert len(expected) == 2 * 2 + 3 + 1 + 4

    # When the exporter scrapes that state file
    collector = GPUCollector(backend, ExporterOptions(load_counters(None)), plugin_state=PluginStateFile(state_file))
    try:
        text = collector.render()
    finally:
        collector.close()
    series = samples(text)
    memory = {s["device_id"]: v for s, v in series["kgpu_mps_slice_pinned_memory_limit_mib"]}
    threads = {s["device_id"]: v for s, v in series["kgpu_mps_slice_active_thread_percentage"]}

    # Then every slice (and every equal replica) has one series of each, with the layout's limits
    assert {i: (memory[i], threads[i]) for i in memory} == expected
    assert set(threads) == set(expected)
    # And they are the limits Allocate hands the slice's container
    for resource in logic.resources():
        for device in resource.devices:
            if device.id in expected:
                envs = logic.allocate(resource.name, [device.id]).envs
                assert envs[ENV_MEM_LIMIT] == f"0={expected[device.id][0]}M"
                assert envs[ENV_THREADS] == str(expected[device.id][1])
    # And the series name the slice's GPU and resource, as the layout does
    owners = {s["device_id"]: (s["UUID"], s["resource"]) for s, _ in series["kgpu_mps_slice_pinned_memory_limit_mib"]}
    assert owners == {s.id: (s.gpu_uuid, s.resource) for s in layout.slices}
    # And devices advertised per GPU are the slices the labels count: GPU 0 has 2 + 3
    advertised = {(s["gpu"], s["resource"]): v for s, v in series["kgpu_gpu_advertised_devices"]}
    assert advertised[("0", "nvidia.com/gpu-20gb")] + advertised[("0", "nvidia.com/gpu-10gb")] == 5
    labels = node_labels(inventory, resolve_settings(path, None, {}), HostFacts())
    assert labels["nvidia.com/gpu.replicas"] == "5"
    assert labels["nvidia.com/gpu-10gb.memory"] == str(int(memory[f"{inventory.gpus[0].uuid}::gpu-10gb-0"]))
    assert labels["nvidia.com/gpu-20gb.count"] == str(sum(1 for i in memory if "::gpu-20gb-" in i))
