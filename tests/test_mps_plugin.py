"""MPS slices served by the device plugin: advertised, allocated, and healthy only while their daemon runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from dp_helpers import build_logic, plugin_config

from kgpu.config.values import PluginConfig
from kgpu.container import AllocationError
from kgpu.deviceplugin.daemon import run_plugin
from kgpu.deviceplugin.health import HealthTracker
from kgpu.deviceplugin.mps import MpsHealthSource, layout_for
from kgpu.deviceplugin.plugin import DevicePlugin, PluginSettings
from kgpu.deviceplugin.statefile import MpsLimits, PluginState
from kgpu.errors import ConfigError
from kgpu.gpu.backend import open_backend
from kgpu.gpu.model import Inventory
from kgpu.sharing import MpsPaths
from kgpu.sharing.daemon import ControlClient, GpuDaemon, Supervisor, spec_for
from kgpu.testing.kubelet import FakeKubelet

FAKE = Path(__file__).parent / "fakes" / "nvidia-cuda-mps-control"
H100_0 = "GPU-04af0a9b-6df0-595a-bd74-7498840294e2"
SLICES = """
version: v1
flags:
  mpsRoot: {root}
sharing:
  mps:
    failRequestsGreaterThanOne: {fail}
    slices:
    - {{name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 50, count: 1, devices: [0]}}
    - {{name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 25, count: 2, devices: [0]}}
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-mps-"))  # unix socket paths must stay short
    yield d
    for pid_file in d.glob("mps/*/pipe/nvidia-cuda-mps-control.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    shutil.rmtree(d, ignore_errors=True)


def h100() -> Inventory:
    backend = open_backend(simulate="h100x8")
    try:
        return backend.inventory()
    finally:
        backend.close()


def config(directory: Path, text: str, **flags: object) -> PluginConfig:
    return plugin_config(directory, text, **flags)


def test_slices_replace_their_gpu_and_the_other_gpus_stay_whole(short_dir: Path) -> None:
    logic = build_logic(h100(), config(short_dir, SLICES.format(root=short_dir / "mps", fail="false")))
    resources = {r.name: r for r in logic.resources()}
    assert sorted(resources) == ["nvidia.com/gpu", "nvidia.com/gpu-10gb", "nvidia.com/gpu-20gb"]
    assert H100_0 not in {d.id for d in resources["nvidia.com/gpu"].devices}
    assert len(resources["nvidia.com/gpu"].devices) == 7
    small = [d.id for d in resources["nvidia.com/gpu-10gb"].devices]
    assert small == [f"{H100_0}::gpu-10gb-0", f"{H100_0}::gpu-10gb-1"]
    assert resources["nvidia.com/gpu-20gb"].socket_name == "nvidia-gpu-20gb.sock"
    assert all(d.health_uuids == (H100_0,) for d in resources["nvidia.com/gpu-10gb"].devices)


def test_allocate_adds_the_slice_limits_to_the_list_strategy(short_dir: Path) -> None:
    root = short_dir / "mps"
    logic = build_logic(h100(), config(short_dir, SLICES.format(root=root, fail="false")))
    alloc = logic.allocate("nvidia.com/gpu-20gb", [f"{H100_0}::gpu-20gb-0"])
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == H100_0
    assert alloc.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M"
    assert alloc.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert alloc.envs["CUDA_MPS_PIPE_DIRECTORY"] == f"{root}/{H100_0}/pipe"
    assert {m.container_path for m in alloc.mounts} == {f"{root}/{H100_0}/pipe", f"{root}/{H100_0}/log", "/dev/shm"}
    both = logic.allocate("nvidia.com/gpu-10gb", [f"{H100_0}::gpu-10gb-0", f"{H100_0}::gpu-10gb-1"])
    assert both.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M"
    assert both.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"


def test_index_strategy_and_driver_mounts_keep_the_mps_environment(short_dir: Path) -> None:
    cfg = config(short_dir, SLICES.format(root=short_dir / "mps", fail="false"), device_id_strategy="index")
    alloc = build_logic(h100(), cfg).allocate("nvidia.com/gpu-10gb", [f"{H100_0}::gpu-10gb-1"])
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert alloc.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"


def test_fail_requests_greater_than_one_names_the_mps_section(short_dir: Path) -> None:
    logic = build_logic(h100(), config(short_dir, SLICES.format(root=short_dir / "mps", fail="true")))
    with pytest.raises(AllocationError, match=r"sharing\.mps\.failRequestsGreaterThanOne is true"):
        logic.allocate("nvidia.com/gpu-10gb", [f"{H100_0}::gpu-10gb-0", f"{H100_0}::gpu-10gb-1"])


def test_nvidia_equal_replicas_with_rename_by_default(short_dir: Path) -> None:
    text = ("version: v1\nsharing:\n  mps:\n    renameByDefault: true\n    resources:\n"
            "    - name: nvidia.com/gpu\n      replicas: 4\n")
    logic = build_logic(h100(), config(short_dir, text))
    resources = {r.name: r for r in logic.resources()}
    assert list(resources) == ["nvidia.com/gpu.shared"]
    shared = resources["nvidia.com/gpu.shared"]
    assert len(shared.devices) == 32 and shared.devices[1].id == f"{H100_0}::1"
    alloc = logic.allocate("nvidia.com/gpu.shared", [f"{H100_0}::1"])
    assert alloc.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20389M"
    assert alloc.envs["CUDA_MPS_PIPE_DIRECTORY"] == f"/run/kgpu/mps/{H100_0}/pipe"


def test_an_oversubscribed_layout_stops_the_plugin_with_the_arithmetic(short_dir: Path) -> None:
    text = ("version: v1\nsharing:\n  mps:\n    slices:\n"
            "    - {name: gpu-40gb, memory: 40Gi, computePercent: 50, count: 2, devices: [0]}\n")
    with pytest.raises(ConfigError, match=r"2×40960 = 81920 MiB > 81559 MiB"):
        build_logic(h100(), config(short_dir, text))


def test_slices_are_unhealthy_until_their_daemon_runs_and_while_it_is_down(short_dir: Path) -> None:
    # Given the device plugin serving GPU 0's slices to a kubelet, with the MPS health feed
    root = short_dir / "mps"
    cfg = config(short_dir, SLICES.format(root=root, fail="false"))
    inventory = h100()
    logic = build_logic(inventory, cfg)
    tracker = HealthTracker()
    stop = threading.Event()
    paths = MpsPaths(root)
    layout = layout_for(inventory, cfg.sharing.mps)
    mps = MpsHealthSource(layout, paths, tracker)
    mps.tick()
    kubelet = FakeKubelet(short_dir / "dp").start()
    plugin = DevicePlugin(logic, tracker, PluginSettings(kubelet_dir=kubelet.directory, state_file=None))
    thread = threading.Thread(target=run_plugin, args=(plugin, None, stop, mps.tick), daemon=True)
    thread.start()
    (gpu,) = layout.gpus
    spec = spec_for(gpu, paths, FAKE, {})
    daemon = GpuDaemon(spec, client=ControlClient(spec, timeout=30.0))  # only a daemon that hangs waits that long
    supervisor = Supervisor([daemon], paths)

    def healthy_count(devices: list) -> int:  # type: ignore[type-arg]
        return sum(1 for d in devices if d.health == "Healthy")

    try:
        kubelet.wait_for_registration("nvidia.com/gpu-10gb")
        watch = kubelet.watch("nvidia.com/gpu-10gb")
        # Then before any daemon runs, both slices are advertised Unhealthy and Allocate refuses them
        watch.wait_for(lambda ds: len(ds) == 2 and healthy_count(ds) == 0)
        with pytest.raises(grpc.RpcError) as refused:
            kubelet.client("nvidia.com/gpu-10gb").allocate([[f"{H100_0}::gpu-10gb-0"]])
        assert "no MPS daemon status" in str(refused.value.details())
        # When kgpu mps-daemon starts the GPU's daemon, they turn Healthy
        supervisor.check_all()
        watch.wait_for(lambda ds: healthy_count(ds) == 2)
        response = kubelet.client("nvidia.com/gpu-10gb").allocate([[f"{H100_0}::gpu-10gb-0"]])
        envs = response.container_responses[0].envs
        assert envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=10240M"
        assert envs["CUDA_MPS_PIPE_DIRECTORY"] == str(paths.pipe_dir(H100_0))
        # When the daemon dies, they go Unhealthy; once it is restarted, Healthy again
        os.kill(int(paths.pid_file(H100_0).read_text()), signal.SIGKILL)
        supervisor.check_all()
        watch.wait_for(lambda ds: healthy_count(ds) == 0)
        supervisor.check_all()
        watch.wait_for(lambda ds: healthy_count(ds) == 2)
        # The GPUs that are not shared were never affected
        whole = kubelet.watch("nvidia.com/gpu")
        whole.wait_for(lambda ds: len(ds) == 7)
        assert [sum(1 for d in ds if d.health == "Healthy") for ds in whole.history] == [7]
        # And the state file tells the exporter each slice's limits
        state = PluginState.from_json(json.loads(json.dumps(plugin.state().to_json())), "state.json")
        limits = {d.id: d.mps for r in state.resources for d in r.devices if d.mps is not None}
        assert limits[f"{H100_0}::gpu-10gb-1"] == MpsLimits(memory_mib=10240, compute_percent=25)
        assert limits[f"{H100_0}::gpu-20gb-0"] == MpsLimits(memory_mib=20480, compute_percent=50)
        assert len(limits) == 3
    finally:
        supervisor.stop_all()
        stop.set()
        thread.join(10)
        kubelet.stop()


def test_preferred_allocation_keeps_a_containers_slices_on_one_gpu(short_dir: Path) -> None:
    text = ("version: v1\nsharing:\n  mps:\n    failRequestsGreaterThanOne: false\n    slices:\n"
            "    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 20, count: 3, devices: [0, 1]}\n")
    logic = build_logic(h100(), config(short_dir, text))
    (small,) = [r for r in logic.resources() if r.name == "nvidia.com/gpu-10gb"]
    ids = [d.id for d in small.devices]
    gpu1 = [i for i in ids if not i.startswith(H100_0)]
    # Given GPU 0 has one slice left and GPU 1 all three, a request for 2 lands on GPU 1 only
    available = [ids[0], *gpu1]
    chosen = logic.preferred_allocation("nvidia.com/gpu-10gb", available, [], 2)
    assert len(chosen) == 2 and all(i in gpu1 for i in chosen)
    logic.allocate("nvidia.com/gpu-10gb", chosen)  # and Allocate accepts it
    # A slice that must be included pins the GPU
    assert all(i.startswith(H100_0) for i in logic.preferred_allocation("nvidia.com/gpu-10gb", ids, [ids[1]], 2))
    # Single slices still spread to the GPU with the most free
    assert logic.preferred_allocation("nvidia.com/gpu-10gb", [ids[0], *gpu1], [], 1)[0] in gpu1


def test_kgpu_device_plugin_serves_slices_healthy_only_while_kgpu_mps_daemon_runs(short_dir: Path) -> None:
    # Given `kgpu device-plugin` (a subprocess) with slices of GPU 0, and no MPS daemon yet
    root = short_dir / "mps"
    path = short_dir / "config.yaml"
    path.write_text(SLICES.format(root=root, fail="false"))
    kubelet = FakeKubelet(short_dir / "dp").start()
    plugin = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "device-plugin", "--config-file", str(path),
         "--kubelet-dir", str(kubelet.directory), "--state-file", str(short_dir / "state.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    daemon = None
    try:
        kubelet.wait_for_registration("nvidia.com/gpu-20gb")
        watch = kubelet.watch("nvidia.com/gpu-20gb")
        watch.wait_for(lambda ds: [d.health for d in ds] == ["Unhealthy"])
        # When kgpu mps-daemon starts the daemon, the slice turns Healthy; when it stops, Unhealthy again
        daemon = subprocess.Popen(
            [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "mps-daemon", "--config-file", str(path),
             "--control-binary", str(FAKE), "--interval", "0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        watch.wait_for(lambda ds: [d.health for d in ds] == ["Healthy"], timeout=30)
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
        watch.wait_for(lambda ds: [d.health for d in ds] == ["Unhealthy"])
    finally:
        for proc in (daemon, plugin):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
        kubelet.stop()
