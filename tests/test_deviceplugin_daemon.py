"""The device plugin daemon against a kubelet stand-in, over real unix sockets (in-process, fake logic)."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from dp_fake_logic import FakeLogic

from kgpu.daemon import Daemon
from kgpu.deviceplugin.daemon import attach
from kgpu.deviceplugin.health import HealthTracker, XidPolicy
from kgpu.deviceplugin.plugin import DevicePlugin, PluginSettings
from kgpu.errors import ConfigError
from kgpu.gpu import open_backend
from kgpu.gpu.backend import GPUBackend
from kgpu.gpu.simulated import inject_event
from kgpu.testing.kubelet import FakeKubelet, PluginClient

H100_0 = "GPU-04af0a9b-6df0-595a-bd74-7498840294e2"
H100_1 = "GPU-e57918dd-6f99-5f96-95aa-8d09bb69141f"
A100_MIG_PARENT = "GPU-374202be-4ba9-56b5-bd01-03f77bd5589f"
A100_MIG_3G = "MIG-51ae983c-d1ea-5513-88c1-a818a9ff928a"


@dataclass
class Node:
    kubelet: FakeKubelet
    daemon: DevicePlugin
    runtime: Daemon
    logic: FakeLogic
    backend: GPUBackend
    events: Path
    state_file: Path
    stop: threading.Event
    thread: threading.Thread

    @property
    def directory(self) -> Path:
        return self.kubelet.directory

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def tmpdir_short() -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes: pytest's tmp_path is too deep.
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-dp-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_node(
    root: Path,
    fixture: str = "h100x8",
    *,
    kubelet_up: bool = True,
    recovery_window: float = 300.0,
    policy: XidPolicy | None = None,
    **logic_args: object,
) -> Node:
    events = root / "events.jsonl"
    backend = open_backend(simulate=fixture, simulate_events=events)
    inventory = backend.inventory()
    logic = FakeLogic(inventory, **logic_args)  # type: ignore[arg-type]
    parents = {m.uuid: m.parent_uuid for m in inventory.mig_devices}
    tracker = HealthTracker(policy, parents=parents, recovery_window=recovery_window)
    kubelet = FakeKubelet(root / "device-plugins")
    if kubelet_up:
        kubelet.start()
    else:
        kubelet.directory.mkdir(parents=True)
    state_file = root / "state" / "state.json"
    plugin = DevicePlugin(logic, tracker, PluginSettings(kubelet_dir=kubelet.directory, state_file=state_file))
    stop = threading.Event()
    runtime = Daemon("device-plugin", stop=stop)
    runtime.on_stop(plugin.close)
    attach(runtime, plugin, tracker, backend)

    def serve() -> None:
        with runtime:
            runtime.serve()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return Node(kubelet, plugin, runtime, logic, backend, events, state_file, stop, thread)


@pytest.fixture
def node(tmpdir_short: Path) -> Iterator[Node]:
    n = start_node(tmpdir_short)
    yield n
    n.shutdown()
    n.kubelet.stop()


def health_of(devices: list, device_id: str) -> str:  # type: ignore[type-arg]
    return next(d.health for d in devices if device_id == d.ID)


def test_plugin_registers_and_the_kubelet_sees_eight_healthy_gpus_with_numa(node: Node) -> None:
    reg = node.kubelet.wait_for_registration("nvidia.com/gpu")
    assert (reg.version, reg.endpoint) == ("v1beta1", "nvidia-gpu.sock")
    assert reg.get_preferred_allocation_available and not reg.pre_start_required
    devices = node.kubelet.watch("nvidia.com/gpu").wait_for(lambda ds: len(ds) == 8)
    assert {d.health for d in devices} == {"Healthy"}
    # On connecting, the kubelet asked for the plugin's options, as a real kubelet does.
    assert node.kubelet.options["nvidia.com/gpu"].get_preferred_allocation_available
    numa = {d.ID: [n.ID for n in d.topology.nodes] for d in devices}
    assert numa[H100_0] == [0]
    assert numa["GPU-4768631f-07cb-53fc-9a54-4c5fefcf773e"] == [1]


def test_options_and_prestart_answer_as_the_kubelet_expects(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin:
        options = plugin.options()
        assert options.get_preferred_allocation_available and not options.pre_start_required
        assert plugin.pre_start([H100_0]).ByteSize() == 0


def test_allocate_returns_one_response_per_container(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin:
        response = plugin.allocate([[H100_0], [H100_1, H100_0]])
    envs = [dict(r.envs) for r in response.container_responses]
    assert envs == [
        {"NVIDIA_VISIBLE_DEVICES": H100_0},
        {"NVIDIA_VISIBLE_DEVICES": ",".join(sorted([H100_0, H100_1]))},
    ]


def test_allocate_refuses_unknown_ids_with_invalid_argument(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin, pytest.raises(grpc.RpcError) as err:
        plugin.allocate([[H100_0, "GPU-does-not-exist"]])
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown device(s) GPU-does-not-exist" in (err.value.details() or "")
    assert node.logic.calls == []  # nothing was planned for the failed request


def test_preferred_allocation_is_answered_by_the_logic(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin:
        chosen = plugin.preferred_allocation([H100_0, H100_1], [H100_1], 1)
        assert chosen == [H100_1]
        with pytest.raises(grpc.RpcError) as err:
            plugin.preferred_allocation(["nope"], [], 1)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_fatal_xid_marks_the_gpu_unhealthy_and_allocation_is_refused(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    watch = node.kubelet.watch("nvidia.com/gpu")
    watch.wait_for(lambda ds: len(ds) == 8)
    inject_event(node.events, H100_0, "xid", 79)
    # The update is pushed, not polled for (bench/deviceplugin.py measures how fast: target < 250 ms).
    devices = watch.wait_for(lambda ds: health_of(ds, H100_0) == "Unhealthy")
    assert [d.ID for d in devices if d.health == "Unhealthy"] == [H100_0]
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin, pytest.raises(grpc.RpcError) as err:
        plugin.allocate([[H100_0]])
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "XID 79" in (err.value.details() or "")


def test_poison_event_lines_never_stop_health_tracking(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    # Given a plugin serving eight healthy GPUs
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    watch = node.kubelet.watch("nvidia.com/gpu")
    watch.wait_for(lambda ds: len(ds) == 8)
    # When the events file gets lines that are no events — a uuid that is a list, an object, 100 000
    # nested brackets, an XID that is a boolean — a thousand times over, and then a real XID 79
    poison = [
        '{"uuid": ["GPU-a"], "kind": "xid", "xid": 79}',
        '{"uuid": {"a": 1}, "kind": "xid", "xid": 79}',
        "[" * 100_000,
        f'{{"uuid": "{H100_1}", "kind": "xid", "xid": true}}',
    ]
    with open(node.events, "a") as f:
        f.write("\n".join(poison * 1000) + "\n")
    inject_event(node.events, H100_0, "xid", 79)
    # Then the GPU with the real XID goes Unhealthy, and no other (bench/deviceplugin.py times it)
    devices = watch.wait_for(lambda ds: health_of(ds, H100_0) == "Unhealthy")
    assert [d.ID for d in devices if d.health == "Unhealthy"] == [H100_0]
    # And the log says each kind of problem once, not once per line
    ignored = [r for r in caplog.records if r.getMessage().startswith("ignoring injected health event")]
    assert len(ignored) == 3


def test_application_xid_leaves_the_gpu_healthy_and_recovered_event_heals(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    watch = node.kubelet.watch("nvidia.com/gpu")
    watch.wait_for(lambda ds: len(ds) == 8)
    inject_event(node.events, H100_1, "xid", 13)  # graphics engine exception: the application's fault
    inject_event(node.events, H100_0, "ecc")
    devices = watch.wait_for(lambda ds: health_of(ds, H100_0) == "Unhealthy")
    assert health_of(devices, H100_1) == "Healthy"
    inject_event(node.events, H100_0, "recovered")
    devices = watch.wait_for(lambda ds: health_of(ds, H100_0) == "Healthy")
    assert {d.health for d in devices} == {"Healthy"}


def test_state_file_lists_devices_health_and_allocation_counts(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin:
        plugin.allocate([[H100_1]])
        plugin.allocate([[H100_1]])
    inject_event(node.events, H100_0, "xid", 48)

    def settled() -> dict:  # type: ignore[type-arg]
        state = json.loads(node.state_file.read_text())
        devices = {d["id"]: d for d in state["resources"][0]["devices"]}
        assert devices[H100_1]["allocations"] == 2
        assert devices[H100_0]["health"] == "Unhealthy"
        return state

    state = _eventually(settled)
    resource = state["resources"][0]
    assert (resource["name"], resource["socket"], resource["registered"]) == ("nvidia.com/gpu", "nvidia-gpu.sock", True)
    device = next(d for d in resource["devices"] if d["id"] == H100_0)
    assert device == {
        "id": H100_0, "gpu_uuid": H100_0, "replica": None, "numa_node": 0,
        "health": "Unhealthy", "reason": f"{H100_0}: XID 48", "allocations": 0,
    }


def test_kubelet_restart_is_followed_by_reregistration(node: Node) -> None:
    first = node.kubelet.wait_for_registration("nvidia.com/gpu")
    node.kubelet.restart()  # wipes the directory, our socket included, then serves a new kubelet.sock
    # bench/deviceplugin.py measures how fast (target < 1 s); here: that it happens at all.
    second = node.kubelet.wait_for_registration("nvidia.com/gpu", count=2)
    assert second.at > first.at
    assert (node.directory / "nvidia-gpu.sock").is_socket()
    devices = node.kubelet.watch("nvidia.com/gpu").wait_for(lambda ds: len(ds) == 8)
    assert {d.health for d in devices} == {"Healthy"}


def test_plugin_waits_for_a_kubelet_that_is_not_up_yet(tmpdir_short: Path) -> None:
    n = start_node(tmpdir_short, kubelet_up=False)
    kubelet_watcher = next(w for w in n.runtime.watchers if w.name == "kubelet")
    try:
        _eventually(lambda: kubelet_watcher.status().ticks >= 3 or _fail("the daemon did not look for the kubelet"))
        assert n.thread.is_alive()
        assert not (n.directory / "nvidia-gpu.sock").exists()  # nothing served before the kubelet is there
        n.kubelet.start()
        n.kubelet.wait_for_registration("nvidia.com/gpu")
    finally:
        n.shutdown()
        n.kubelet.stop()


def test_clean_stop_removes_sockets_and_the_state_file(tmpdir_short: Path) -> None:
    n = start_node(tmpdir_short)
    n.kubelet.wait_for_registration("nvidia.com/gpu")
    _eventually(lambda: json.loads(n.state_file.read_text()))
    n.shutdown()
    n.kubelet.stop()
    assert not (n.directory / "nvidia-gpu.sock").exists()
    assert not n.state_file.exists()  # helm uninstall leaves nothing of the plugin on the node


def test_gpu_recovers_after_a_quiet_window_when_it_answers_probes(tmpdir_short: Path) -> None:
    n = start_node(tmpdir_short, recovery_window=1.0)
    try:
        n.kubelet.wait_for_registration("nvidia.com/gpu")
        watch = n.kubelet.watch("nvidia.com/gpu")
        watch.wait_for(lambda ds: len(ds) == 8)
        injected_at = time.monotonic()  # the window starts when the daemon reads the event: not earlier
        inject_event(n.events, H100_0, "xid", 94)
        went_bad = watch.wait_for(lambda ds: health_of(ds, H100_0) == "Unhealthy")
        assert went_bad
        watch.wait_for(lambda ds: health_of(ds, H100_0) == "Healthy")
        assert time.monotonic() - injected_at >= 1.0  # not before the (1 s) window has passed
    finally:
        n.shutdown()
        n.kubelet.stop()


def test_lost_gpu_does_not_recover_while_probes_fail(tmpdir_short: Path) -> None:
    n = start_node(tmpdir_short, recovery_window=0.2)
    probes: list[tuple[str, bool]] = []
    real_probe = n.backend.probe

    def probe(uuid: str) -> bool:
        answered = real_probe(uuid)
        probes.append((uuid, answered))
        return answered

    n.backend.probe = probe  # type: ignore[method-assign]  # the recovery loop looks it up on every pass
    try:
        n.kubelet.wait_for_registration("nvidia.com/gpu")
        watch = n.kubelet.watch("nvidia.com/gpu")
        inject_event(n.events, H100_1, "lost")
        watch.wait_for(lambda ds: len(ds) == 8 and health_of(ds, H100_1) == "Unhealthy")
        # Several recovery passes probe the GPU after the window; it stays lost, so every probe fails
        _eventually(lambda: probes.count((H100_1, False)) >= 3 or _fail("fewer than 3 failed probes yet"))
        assert not n.daemon.tracker.device_health([H100_1])[0]
        assert health_of(watch.latest, H100_1) == "Unhealthy"
        inject_event(n.events, H100_1, "recovered")
        watch.wait_for(lambda ds: health_of(ds, H100_1) == "Healthy")
    finally:
        n.shutdown()
        n.kubelet.stop()


def test_an_xid_on_a_mig_parent_takes_its_mig_devices_down_together(tmpdir_short: Path) -> None:
    n = start_node(tmpdir_short, "a100-mig")
    try:
        names = ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-2g.20gb", "nvidia.com/mig-3g.40gb"]
        for name in names:
            n.kubelet.wait_for_registration(name)
        gpu_watch = n.kubelet.watch("nvidia.com/gpu")
        gpu_watch.wait_for(lambda ds: len(ds) == 1)
        inject_event(n.events, A100_MIG_PARENT, "xid", 79)
        for name in names[1:]:
            devices = n.kubelet.watch(name).wait_for(lambda ds: ds and all(d.health == "Unhealthy" for d in ds))
            assert devices
        # The GPU without MIG is untouched.
        assert [[d.health for d in ds] for ds in gpu_watch.history] == [["Healthy"]]
    finally:
        n.shutdown()
        n.kubelet.stop()


def test_another_component_can_mark_a_gpu_unhealthy_and_healthy_again(node: Node) -> None:
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    watch = node.kubelet.watch("nvidia.com/gpu")
    watch.wait_for(lambda ds: len(ds) == 8)
    node.daemon.tracker.set_source_state("mps", H100_1, False, "MPS control daemon exited")
    watch.wait_for(lambda ds: health_of(ds, H100_1) == "Unhealthy")
    node.daemon.tracker.set_source_state("mps", H100_1, True)
    watch.wait_for(lambda ds: health_of(ds, H100_1) == "Healthy")


def test_shared_replicas_go_unhealthy_together_and_oversized_requests_fail(tmpdir_short: Path) -> None:
    n = start_node(tmpdir_short, replicas=4, fail_greater_than_one=True)
    try:
        n.kubelet.wait_for_registration("nvidia.com/gpu")
        watch = n.kubelet.watch("nvidia.com/gpu")
        watch.wait_for(lambda ds: len(ds) == 32)
        inject_event(n.events, H100_0, "xid", 79)
        devices = watch.wait_for(lambda ds: health_of(ds, f"{H100_0}::0") == "Unhealthy")
        assert sorted(d.ID for d in devices if d.health == "Unhealthy") == [f"{H100_0}::{i}" for i in range(4)]
        with PluginClient(n.directory / "nvidia-gpu.sock") as plugin, pytest.raises(grpc.RpcError) as err:
            plugin.allocate([[f"{H100_1}::0", f"{H100_1}::1"]])
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "maximum request size" in (err.value.details() or "")
    finally:
        n.shutdown()
        n.kubelet.stop()


def _fail(why: str) -> bool:
    raise AssertionError(why)


def _eventually(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, FileNotFoundError, json.JSONDecodeError, KeyError, ConfigError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_state_file_carries_mps_slice_limits_for_the_exporter(tmpdir_short: Path) -> None:
    from dp_helpers import build_logic

    from kgpu.config.resolve import resolve_config

    config_file = tmpdir_short / "dp.yaml"
    config_file.write_text(
        f"version: v1\nflags:\n  mpsRoot: {tmpdir_short / 'mps'}\nsharing:\n  mps:\n    slices:\n"
        "    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 50, count: 1, devices: [0]}\n"
    )
    inventory = open_backend(simulate="h100x8").inventory()
    logic = build_logic(inventory, resolve_config({}, {}, config_file))
    plugin = DevicePlugin(logic, HealthTracker(), PluginSettings(kubelet_dir=tmpdir_short, state_file=None))
    resources = {r["name"]: r for r in plugin.state().to_json()["resources"]}
    (slice_device,) = resources["nvidia.com/gpu-20gb"]["devices"]
    assert slice_device["gpu_uuid"] == H100_0
    assert slice_device["mps"] == {"memory_mib": 20480, "compute_percent": 50}
    assert all("mps" not in d for d in resources["nvidia.com/gpu"]["devices"])


def test_the_exporter_reads_the_state_file_the_daemon_writes(node: Node) -> None:
    from kgpu.deviceplugin.statefile import read_state

    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin:
        plugin.allocate([[H100_1]])
    inject_event(node.events, H100_0, "xid", 79)

    def parsed():  # type: ignore[no-untyped-def]
        state = read_state(node.state_file)
        devices = {d.id: d for r in state.resources for d in r.devices}
        assert not devices[H100_0].healthy and devices[H100_1].allocations == 1
        return state

    state = _eventually(parsed)
    assert state.resource_names == ("nvidia.com/gpu",)
    assert state.resources[0].registered


def test_a_bug_in_the_logic_reaches_the_kubelet_as_internal_not_a_hang(node: Node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(resource_name: str, device_ids: list[str]) -> None:
        raise KeyError("numa")

    monkeypatch.setattr(node.logic, "allocate", broken)
    node.kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(node.directory / "nvidia-gpu.sock") as plugin, pytest.raises(grpc.RpcError) as err:
        plugin.allocate([[H100_0]])
    assert err.value.code() is grpc.StatusCode.INTERNAL
    assert "could not plan nvidia.com/gpu" in (err.value.details() or "")
