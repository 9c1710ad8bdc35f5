"""The runtime every daemon shares: backoff, supervised watchers, problems logged once, signals, health, reload."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from configmap import ConfigMapVolume

from kgpu.daemon import Backoff, ConfigReload, Daemon, StopSignals, Watcher, parse_listen
from kgpu.errors import ConfigError
from kgpu.log import ProblemLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    clock = Clock()
    backoff = Backoff(initial=0.5, cap=4, reset_after=60, clock=clock)
    assert [backoff.failed() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    # A success that does not last a minute does not forgive: the next failure keeps growing.
    backoff.succeeded()
    clock.now += 10
    assert backoff.failed() == 4
    backoff.succeeded()
    clock.now += 61
    backoff.succeeded()
    assert backoff.failed() == 0.5
    backoff.reset()
    assert backoff.delay() == 0


def test_a_problem_is_logged_once_per_interval_with_how_often_it_came_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    problems = ProblemLog(logging.getLogger("test-problems"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, "test-problems"):
        for _ in range(1000):
            problems.report("same cause", "it failed", error="x" * 5000)
        problems.report("another cause", "something else failed")
        clock.now += 61
        problems.report("same cause", "it failed")
    lines = [(r.getMessage(), getattr(r, "repeated", 0)) for r in caplog.records]
    assert lines == [("it failed", 0), ("something else failed", 0), ("it failed", 999)]
    assert len(caplog.records[0].error) < 2100  # type: ignore[attr-defined]  # a huge value is cut


class Follower:
    """A watcher's reaction with state: it must go on from where it was after a failure."""

    def __init__(self, failures: int) -> None:
        self.position = 0
        self.failures = failures

    def tick(self) -> None:
        self.position += 1
        if self.failures:
            self.failures -= 1
            raise OSError(f"read failed at position {self.position}")


def test_a_failing_watcher_is_retried_with_backoff_from_where_it_was(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    follower = Follower(failures=3)
    problems = ProblemLog(logging.getLogger("kgpu.test"), clock=clock)
    watcher = Watcher("events", follower.tick, interval=0.0, problems=problems, clock=clock, unhealthy_after=1)
    with caplog.at_level(logging.INFO):
        waits = [watcher.step() for _ in range(3)]
        clock.now += 2
        assert "events: failing for 2 s: read failed at position 3" in watcher.problem()
        assert watcher.step() == 0.0  # the fourth step succeeds
    assert waits == [0.5, 1.0, 2.0]
    assert follower.position == 4  # never started over
    assert watcher.status().state == "running" and not watcher.problem()
    assert [r.getMessage() for r in caplog.records] == ["failed; retrying"] * 3 + ["recovered"]


def test_a_bug_in_a_reaction_never_ends_the_watcher() -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RecursionError("maximum recursion depth exceeded")
        stop.set()

    stop = threading.Event()
    Watcher("bug", tick, interval=0.0, backoff=Backoff(initial=0.001)).run(stop)
    assert len(calls) == 3


def test_health_says_which_watcher_fails_and_a_refused_config_keeps_it_healthy(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("good")
    daemon = Daemon("test")
    failing = daemon.watch("kubelet", lambda: None, interval=1.0, unhealthy_after=0.0)
    failing._failed(ConnectionRefusedError("kubelet.sock refused"))
    reload = ConfigReload(config, load=lambda: config.read_text(), apply=lambda _: None)
    daemon.reload(reload)
    endpoint = daemon.serve_http(parse_listen("127.0.0.1:0", "--healthz"))
    url = f"http://127.0.0.1:{endpoint.port}/healthz"
    try:
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(url, timeout=30)
        assert unhealthy.value.code == 503
        assert "kubelet: failing for 0 s: kubelet.sock refused" in unhealthy.value.read().decode()
        failing.step()
        reload.refused = "version: v2 is not supported"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode()
        assert body.startswith("ok\n")
        assert "the previous one is kept; its current content is refused: version: v2 is not supported" in body
    finally:
        daemon.shutdown()


def test_a_configmap_swap_is_applied_and_an_invalid_file_keeps_the_previous_config(tmp_path: Path) -> None:
    configmap = ConfigMapVolume(tmp_path)
    configmap.update("replicas: 2")
    path = configmap.path
    applied: list[int] = []

    def load() -> int:
        text = path.read_text()
        if not text.startswith("replicas: "):
            raise ConfigError(f"{path}: expected 'replicas: N', got {text[:20]!r}")
        return int(text.split()[1])

    reload = ConfigReload(path, load, applied.append)
    reload.tick()
    assert applied == []  # unchanged since the daemon started
    configmap.update("replicas: 4")
    reload.tick()
    assert applied == [4]
    configmap.update("oops")
    reload.tick()
    assert applied == [4] and "expected 'replicas: N'" in reload.refused
    path.resolve().write_text("replicas: 8")  # an admin rewriting the file in place
    reload.tick()
    assert applied == [4, 8] and reload.refused == "" and reload.reloads == 2


def test_a_missing_file_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a")
    reload: ConfigReload[str] = ConfigReload(path, path.read_text, lambda _: None)
    path.unlink()
    reload.tick()
    assert "unreadable" in reload.refused


def test_sigterm_taken_by_another_thread_wakes_an_untimed_wait() -> None:
    # Given a main thread blocked in an untimed wait (as a daemon's main thread is)
    stop = threading.Event()
    ended = threading.Event()

    def send() -> None:
        time.sleep(0.1)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # this thread takes the signal
        if not stop.wait(20):
            ended.set()
            stop.set()  # only a failing test gets here

    with StopSignals(stop, grace=60) as signals:
        sender = threading.Thread(target=send)
        sender.start()
        stop.wait()
        sender.join()
    assert not ended.is_set(), "SIGTERM taken by another thread did not wake the main thread"
    assert signals.received == signal.SIGTERM


STUCK_DAEMON = """
import threading, time
from kgpu.daemon import Daemon
from kgpu.log import setup_logging
setup_logging("info", json_output=True)
with Daemon("stuck", grace=0.5) as daemon:
    daemon.on_stop(lambda: time.sleep(3600))      # a cleanup that never ends (a kubelet that never answers)
    daemon.watch("busy", lambda: time.sleep(0.05), interval=0)
    print("serving", flush=True)
    daemon.serve()
"""


def test_a_daemon_whose_stop_hangs_still_exits_soon_after_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(STUCK_DAEMON)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "serving\n"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert code == 1
    assert took < 10, f"took {took:.2f} s"  # the cleanup alone would take an hour; bench/ measures the figure
    assert "exiting without a clean stop" in log and "not stopped 0.5 s after the signal" in log
