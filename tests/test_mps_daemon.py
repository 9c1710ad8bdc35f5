"""Supervising MPS control daemons with a fake nvidia-cuda-mps-control that can crash, fail and hang."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from configmap import ConfigMapVolume

from kgpu.config.file import parse_mps_section
from kgpu.daemon import Backoff
from kgpu.gpu.backend import open_backend
from kgpu.sharing import MpsPaths, build_layout
from kgpu.sharing.daemon import (
    ControlClient,
    DaemonSpec,
    GpuDaemon,
    Supervisor,
    driver_env,
    pid_alive,
    spec_for,
)
from kgpu.sharing.status import DaemonState, MpsHealthWatcher, judge, read_status

FAKE = Path(__file__).parent / "fakes" / "nvidia-cuda-mps-control"
UUID0 = "GPU-04af0a9b-6df0-595a-bd74-7498840294e2"


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[MpsPaths]:
    mps = MpsPaths(tmp_path / "mps")
    yield mps
    # Never leave a fake daemon running, whatever the test did.
    for pid_file in mps.root.glob("*/pipe/nvidia-cuda-mps-control.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def daemons_for(paths: MpsPaths, gpus: list[int], client: type[ControlClient] = ControlClient,
                **kwargs: float) -> list[GpuDaemon]:
    backend = open_backend(simulate="h100x8")
    inventory = backend.inventory()
    backend.close()
    mps = {"slices": [
        {"name": "gpu-20gb", "memory": "20Gi", "computePercent": 50, "count": 1, "devices": gpus},
        {"name": "gpu-10gb", "memory": "10Gi", "computePercent": 25, "count": 2, "devices": gpus},
    ]}
    layout = build_layout(inventory, parse_mps_section(mps, "config.yaml"))
    # Every control command runs a (fake) client process: on a loaded machine that can take seconds. The
    # timeout only matters when a daemon does not answer.
    timeout = kwargs.pop("timeout", 30.0)
    return [
        GpuDaemon(spec, client=client(spec, timeout=timeout), **kwargs)
        for spec in (spec_for(g, paths, FAKE, driver_env(FAKE, Path("/opt/driver/lib64"))) for g in layout.gpus)
    ]


def fake_pid(paths: MpsPaths, uuid: str = UUID0) -> int:
    return int(paths.pid_file(uuid).read_text())


def test_restarts_back_off_with_the_runtimes_backoff() -> None:
    assert [Backoff(initial=1, cap=30).delay(n) for n in range(0, 8)] == [0, 1, 2, 4, 8, 16, 30, 30]


def test_a_daemon_starts_per_gpu_with_its_own_pipe_and_the_largest_slice_as_default_limits(paths: MpsPaths) -> None:
    # Given GPU 0 shared as one 20 GiB/50 % and two 10 GiB/25 % slices
    (daemon,) = daemons_for(paths, [0])
    # When the supervisor checks once
    Supervisor([daemon], paths).check_all()
    # Then the daemon runs with the GPU's UUID as its only visible device and its own directories
    assert daemon.state is DaemonState.RUNNING and pid_alive(fake_pid(paths))
    env = json.loads((paths.log_dir(UUID0) / "env.json").read_text())
    assert env["CUDA_VISIBLE_DEVICES"] == UUID0
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(paths.pipe_dir(UUID0))
    assert env["CUDA_MPS_LOG_DIRECTORY"] == str(paths.log_dir(UUID0))
    assert str(FAKE.parent) in env["PATH"].split(os.pathsep)
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == "/opt/driver/lib64"
    # And the defaults are the largest slice's
    control_log = (paths.log_dir(UUID0) / "control.log").read_text()
    assert "set_default_device_pinned_mem_limit 0 20480M" in control_log
    assert "set_default_active_thread_percentage 50" in control_log
    # And the device plugin side sees a healthy daemon; the node is ready
    status = read_status(paths, UUID0)
    assert not isinstance(status, str) and status.state is DaemonState.RUNNING and status.pid == fake_pid(paths)
    assert judge(status, time.time()) == (True, "MPS daemon running")
    assert paths.ready_file.exists()
    Supervisor([daemon], paths).stop_all()


def test_a_crashed_daemon_makes_slices_unhealthy_then_is_restarted_and_healthy_again(paths: MpsPaths) -> None:
    # Given the supervisor running in the background and the device plugin's watcher, which reads the
    # status files after every check of the supervisor: it sees every state the supervisor publishes,
    # however short (a watcher polling on its own clock may or may not catch a brief "down")
    (daemon,) = daemons_for(paths, [0])
    watcher = MpsHealthWatcher(paths, [UUID0])
    seen: list[bool] = []
    stop = threading.Event()
    supervisor = Supervisor([daemon], paths, interval=0.05,
                            on_check=lambda: seen.extend(c.healthy for c in watcher.check()))
    at_stop: list[str] = []  # what the daemon logged, read just before a clean stop removes the files
    remove_files = supervisor.remove_files

    def read_log_then_remove() -> None:
        at_stop.append((paths.log_dir(UUID0) / "control.log").read_text())
        remove_files()

    supervisor.remove_files = read_log_then_remove  # type: ignore[method-assign]
    thread = threading.Thread(target=supervisor.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: len(seen) >= 1)
        assert seen == [True]  # the first status the supervisor wrote says running
        seen.clear()
        first = fake_pid(paths)
        # When the daemon is killed
        os.kill(first, signal.SIGKILL)
        # Then its slices go Unhealthy, and come back Healthy once a new daemon answers
        wait_for(lambda: len(seen) >= 2)
        assert seen == [False, True]
        assert fake_pid(paths) != first and daemon.restarts == 1
        status = read_status(paths, UUID0)
        assert not isinstance(status, str) and status.restarts == 1
    finally:
        stop.set()
        thread.join(10)
    # And on stop the daemon was told to quit, and nothing but the directories is left on the node (GPU pods
    # keep them mounted), so the device plugin judges the slices unhealthy: no status.
    assert not paths.pid_file(UUID0).exists()
    assert "quit" in at_stop[0]
    assert not paths.ready_file.exists() and not paths.status_file(UUID0).exists()
    assert [p for p in paths.gpu_dir(UUID0).rglob("*") if not p.is_dir()] == []
    assert paths.pipe_dir(UUID0).is_dir() and paths.log_dir(UUID0).is_dir()
    assert str(read_status(paths, UUID0)).startswith(f"no MPS daemon status at {paths.status_file(UUID0)}")


def test_a_daemon_that_dies_leaving_its_pid_file_and_socket_is_detected_and_replaced(paths: MpsPaths) -> None:
    (daemon,) = daemons_for(paths, [0])
    supervisor = Supervisor([daemon], paths)
    supervisor.check_all()
    first = fake_pid(paths)
    daemon.client.send("fake_crash")  # the fake exits at once, as if it crashed
    wait_for(lambda: not pid_alive(first))
    assert paths.pid_file(UUID0).exists()  # stale
    supervisor.check_all()  # notices: down
    assert daemon.state is DaemonState.DOWN and "exited" in daemon.detail
    supervisor.check_all()  # restarts (the first failure has no backoff)
    assert daemon.state is DaemonState.RUNNING and fake_pid(paths) != first
    assert daemon.restarts == 1
    supervisor.stop_all()


def test_a_failing_start_is_retried_with_backoff_and_reported(paths: MpsPaths) -> None:
    now = [1000.0]  # the supervisor's clock, moved by the test: backoff does not depend on how fast the machine is
    (daemon,) = daemons_for(paths, [0], backoff_base=0.2)
    daemon.clock = lambda: now[0]
    marker = paths.gpu_dir(UUID0) / "fail-start"
    marker.parent.mkdir(parents=True)
    marker.touch()
    supervisor = Supervisor([daemon], paths)
    supervisor.check_all()
    assert daemon.state is DaemonState.DOWN
    status = read_status(paths, UUID0)
    assert not isinstance(status, str)
    assert "already running" in status.detail and "retrying in 0.2 s" in status.detail
    assert judge(status, time.time())[0] is False
    # Not retried before the backoff is over
    marker.unlink()
    supervisor.check_all()
    assert daemon.state is DaemonState.DOWN
    now[0] += 0.25
    supervisor.check_all()
    assert daemon.state is DaemonState.RUNNING
    supervisor.stop_all()


class GivesUpOnHungDaemons(ControlClient):
    """A control client that waits 0.5 s for a daemon started hung (so the test is quick) and as long as
    it takes for any other (so a healthy daemon on a loaded machine is never mistaken for a hung one)."""

    HUNG_TIMEOUT = 0.5

    def __init__(self, spec: DaemonSpec, timeout: float) -> None:
        super().__init__(spec, timeout=timeout)
        self.patience = timeout
        self.hung: set[int | None] = set()

    def start(self) -> None:
        hangs = (self.spec.pipe_dir.parent / "hang-start").exists()
        self.timeout = self.patience
        super().start()
        if hangs:
            self.hung.add(self.pid())

    def send(self, command: str) -> str:
        self.timeout = self.HUNG_TIMEOUT if self.pid() in self.hung else self.patience
        return super().send(command)


def test_a_daemon_that_never_answers_is_down_and_killed_before_the_next_try(paths: MpsPaths) -> None:
    # start_timeout only bounds the retries: the first get_server_list to a fresh daemon is always sent
    (daemon,) = daemons_for(paths, [0], client=GivesUpOnHungDaemons, start_timeout=0.5, backoff_base=0.01)
    marker = paths.gpu_dir(UUID0) / "hang-start"
    marker.parent.mkdir(parents=True)
    marker.touch()
    supervisor = Supervisor([daemon], paths)
    supervisor.check_all()
    assert daemon.state is DaemonState.DOWN and "did not answer" in daemon.detail
    hung = fake_pid(paths)
    marker.unlink()
    time.sleep(0.05)  # the (0.01 s) backoff is over
    supervisor.check_all()  # quits (times out), signals the hung daemon, starts a fresh one
    assert not pid_alive(hung)
    assert daemon.state is DaemonState.RUNNING and fake_pid(paths) != hung
    supervisor.stop_all()


def test_a_daemon_left_from_an_earlier_run_is_replaced_so_new_limits_apply(paths: MpsPaths) -> None:
    (daemon,) = daemons_for(paths, [0])
    daemon.spec.pipe_dir.mkdir(parents=True)
    daemon.spec.log_dir.mkdir(parents=True)
    daemon.client.start()
    leftover = fake_pid(paths)
    supervisor = Supervisor([daemon], paths)
    supervisor.check_all()
    assert not pid_alive(leftover) and fake_pid(paths) != leftover
    supervisor.stop_all()


def test_a_crash_on_one_gpu_leaves_the_other_gpus_daemon_alone(paths: MpsPaths) -> None:
    daemons = daemons_for(paths, [0, 1])
    supervisor = Supervisor(daemons, paths)
    supervisor.check_all()
    other = daemons[1].spec.uuid
    other_pid = fake_pid(paths, other)
    os.kill(fake_pid(paths), signal.SIGKILL)
    wait_for(lambda: not pid_alive(daemons[0].pid or 0))
    supervisor.check_all()
    assert [d.state for d in daemons] == [DaemonState.DOWN, DaemonState.RUNNING]
    supervisor.check_all()
    assert daemons[0].restarts == 1 and daemons[1].restarts == 0
    assert fake_pid(paths, other) == other_pid
    supervisor.stop_all()


def test_a_stale_status_file_means_unhealthy(paths: MpsPaths) -> None:
    (daemon,) = daemons_for(paths, [0])
    supervisor = Supervisor([daemon], paths)
    supervisor.check_all()
    status = read_status(paths, UUID0)
    assert not isinstance(status, str)
    healthy, reason = judge(status, status.updated + 60)
    assert not healthy and "60 s old" in reason
    assert judge(read_status(paths, "GPU-00000000-0000-0000-0000-000000000000"), time.time())[1].startswith(
        "no MPS daemon status at"
    )
    supervisor.stop_all()


def test_kgpu_mps_daemon_runs_until_sigterm_and_stops_its_daemons(paths: MpsPaths, tmp_path: Path) -> None:
    # Given a config that shares GPUs 0 and 1 of the simulated H100 node
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: v1\nsharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n"
        "      devices: [0, 1]\n"
    )
    env = {**os.environ, "KGPU_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "mps-daemon", "--config-file", str(config),
         "--mps-root", str(paths.root), "--control-binary", str(FAKE), "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_for(paths.ready_file.exists)
        layout = json.loads(paths.layout_file.read_text())
        assert [len(g["slices"]) for g in layout["gpus"]] == [4, 4]
        pids = [int(f.read_text()) for f in sorted(paths.root.glob("*/pipe/nvidia-cuda-mps-control.pid"))]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        control_log = (paths.log_dir(UUID0) / "control.log").read_text()
        assert "set_default_device_pinned_mem_limit 0 20389M" in control_log
        assert "set_default_active_thread_percentage 25" in control_log
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not any(pid_alive(p) for p in pids)
    assert not paths.ready_file.exists() and not paths.layout_file.exists()
    assert [p for p in paths.root.rglob("*") if not p.is_dir()] == []  # helm uninstall leaves no file
    assert '"msg": "MPS daemon running"' in err


def test_kgpu_mps_daemon_refuses_an_oversubscribed_layout(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: v1\nsharing:\n  mps:\n    slices:\n"
        "    - {name: gpu-20gb, memory: 20Gi, computePercent: 25, count: 4, devices: [0]}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "mps-daemon", "--config-file", str(config),
         "--mps-root", str(tmp_path / "mps"), "--control-binary", str(FAKE)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "4×20480 = 81920 MiB > 81559 MiB" in done.stderr
    assert not (tmp_path / "mps").exists()


def test_exclusive_process_is_opt_in_and_restored_on_exit(paths: MpsPaths, tmp_path: Path) -> None:
    # Given a driver root with the (fake) MPS control binary and an nvidia-smi that records its arguments
    root = tmp_path / "driver"
    (root / "bin").mkdir(parents=True)
    shutil.copy(FAKE, root / "bin" / "nvidia-cuda-mps-control")
    calls = tmp_path / "smi-calls"
    smi = root / "bin" / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    smi.chmod(0o755)
    config = tmp_path / "config.yaml"
    config.write_text("version: v1\nsharing:\n  mps:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2, "
                      "devices: [0]}\n")
    args = [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "--driver-root", str(root), "mps-daemon",
            "--config-file", str(config), "--mps-root", str(paths.root), "--interval", "0.1"]
    # When it runs without the flag, nvidia-smi is never called
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(paths.ready_file.exists)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0 and not calls.exists()
    # With --exclusive-process, the shared GPU is set to EXCLUSIVE_PROCESS and back to its mode before
    proc = subprocess.Popen([*args, "--exclusive-process"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(paths.ready_file.exists)
    assert calls.read_text() == f"-i {UUID0} -c EXCLUSIVE_PROCESS\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert calls.read_text() == f"-i {UUID0} -c EXCLUSIVE_PROCESS\n-i {UUID0} -c DEFAULT\n"


def test_kgpu_mps_daemon_follows_a_configmap_update_and_keeps_running_daemons_on_a_bad_one(
    paths: MpsPaths, tmp_path: Path,
) -> None:
    # Given kgpu mps-daemon sharing GPU 0 from a mounted ConfigMap
    shared = "version: v1\nsharing:\n  mps:\n    resources:\n    - {{name: nvidia.com/gpu, replicas: 2, devices: {}}}\n"
    configmap = ConfigMapVolume(tmp_path / "config")
    configmap.update(shared.format("[0]"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "mps-daemon", "--config-file", str(configmap.path),
         "--mps-root", str(paths.root), "--control-binary", str(FAKE), "--interval", "0.1",
         "--healthz", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    uuid1 = "GPU-e57918dd-6f99-5f96-95aa-8d09bb69141f"
    try:
        wait_for(paths.ready_file.exists)
        first = fake_pid(paths)
        # When GPU 1 is shared too, its daemon starts and GPU 0's keeps running (same process)
        configmap.update(shared.format("[0, 1]"))
        wait_for(lambda: paths.pid_file(uuid1).exists() and paths.ready_file.exists())
        assert fake_pid(paths) == first
        assert [g["uuid"] for g in json.loads(paths.layout_file.read_text())["gpus"]] == [UUID0, uuid1]
        # When the file becomes invalid, nothing changes
        configmap.update("version: v1\nsharing:\n  mps:\n    resources: oops\n")

        def health() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
                return str(response.read().decode())

        wait_for(lambda: "its current content is refused" in health())
        assert "sharing.mps.resources" in health() and health().startswith("ok\n")  # refused, still healthy
        assert fake_pid(paths) == first and pid_alive(fake_pid(paths, uuid1))
        # When GPU 0 is no longer shared, its daemon is told to quit
        configmap.update(shared.format("[1]"))
        wait_for(lambda: not pid_alive(first))
        wait_for(paths.ready_file.exists)  # the reload is over: GPU 1's daemon checked and ready
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err.count("the changed sharing.mps configuration is refused") == 1


def test_a_gpu_no_longer_shared_after_a_reload_keeps_nothing_on_the_node(paths: MpsPaths) -> None:
    # Given daemons on GPUs 0 and 1,
    zero, one = daemons_for(paths, [0, 1])
    supervisor = Supervisor([zero, one], paths, layout_json={"gpus": []})
    supervisor.prepare()
    supervisor.check_all()
    assert paths.status_file(one.spec.uuid).exists() and paths.layout_file.exists()
    try:
        # when a reloaded config shares GPU 0 only, GPU 1's daemon stops and its files go (its directories stay,
        # GPU pods may have them mounted), while GPU 0's daemon keeps running;
        supervisor.replace(daemons_for(paths, [0]), {"gpus": []})
        assert [p for p in paths.gpu_dir(one.spec.uuid).rglob("*") if not p.is_dir()] == []
        assert paths.pipe_dir(one.spec.uuid).is_dir()
        assert pid_alive(fake_pid(paths, zero.spec.uuid))
        # and when it shares nothing, the layout goes too.
        supervisor.replace([], None)
        assert not paths.layout_file.exists()
        assert [p for p in paths.root.rglob("*") if not p.is_dir()] == []
    finally:
        supervisor.stop_all()


class QuitsWithTheOthers(GpuDaemon):
    """A GPU's daemon whose quit returns only once every GPU's daemon has been told to quit: stopped one after
    the other, the first never returns (the barrier breaks); stopped together, all return at once."""

    def __init__(self, spec: DaemonSpec, barrier: threading.Barrier) -> None:
        super().__init__(spec)
        self.barrier = barrier

    def stop(self, timeout: float = 1.0) -> None:
        self.barrier.wait(timeout=30)
        self.state, self.detail = DaemonState.STOPPED, "stopped by kgpu mps-daemon"


# Given an 8-GPU node sharing every GPU through MPS, when SIGTERM stops the supervisor,
# then every daemon is told to quit at once (eight in turn did not fit in the stop grace), and nothing is left.
def test_every_gpus_daemon_is_stopped_at_once_and_their_files_removed(paths: MpsPaths) -> None:
    config = parse_mps_section({"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]})
    layout = build_layout(open_backend(simulate="h100x8").inventory(), config)
    barrier = threading.Barrier(len(layout.gpus))
    daemons = [QuitsWithTheOthers(spec_for(g, paths, FAKE, {}), barrier) for g in layout.gpus]
    supervisor = Supervisor(daemons, paths, layout_json={"gpus": len(daemons)})
    supervisor.prepare()
    for daemon in daemons:
        paths.log_dir(daemon.spec.uuid).mkdir(parents=True, exist_ok=True)
        (paths.log_dir(daemon.spec.uuid) / "control.log").write_text("Started\n")
    supervisor.stop_all()
    assert len(daemons) == 8 and not barrier.broken
    assert [p for p in paths.root.rglob("*") if not p.is_dir()] == []
