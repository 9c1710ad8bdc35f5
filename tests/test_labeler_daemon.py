"""The labeler daemon: relabels on change at once, re-asserts every interval, survives errors, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kgpu.daemon import Daemon, parse_listen
from kgpu.errors import ConfigError, KgpuError
from kgpu.labels.daemon import Labeler, LabelerState, LoopTiming, parse_duration, run_labeler
from kgpu.labels.output import parse_lines

TIMING = LoopTiming(interval=60.0, poll=0.001)


class Node:
    """A scripted node: each poll returns the next labels (or raises), and advances a fake clock."""

    def __init__(self, script: list[dict[str, str] | Exception], seconds_per_poll: float = 5.0) -> None:
        self.script = script
        self.clock = 1000.0
        self.seconds_per_poll = seconds_per_poll
        self.published: list[dict[str, str]] = []
        self.publish_failures: list[Exception] = []
        self.stop = threading.Event()

    def compute(self) -> dict[str, str]:
        self.clock += self.seconds_per_poll
        step = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if isinstance(step, Exception):
            raise step
        return step

    def publish(self, labels: dict[str, str]) -> None:
        if self.publish_failures:
            raise self.publish_failures.pop(0)
        self.published.append(labels)

    def run(self, timing: LoopTiming = TIMING, **kw: object) -> LabelerState:
        return run_labeler(self.compute, self.publish, self.stop, timing, wall_clock=lambda: self.clock,
                           monotonic=lambda: self.clock, **kw)  # type: ignore[arg-type]


A = {"nvidia.com/gpu.count": "8"}
B = {"nvidia.com/gpu.count": "7"}


def test_unchanged_labels_are_published_once_per_interval_with_a_stable_timestamp() -> None:
    node = Node([A] * 30)  # 30 polls x 5 s = 150 s
    node.run()
    assert len(node.published) == 3  # at 0 s, 60 s, 120 s
    assert {p["nvidia.com/gfd.timestamp"] for p in node.published} == {"1005"}


def test_a_change_is_published_at_the_next_poll_with_a_new_timestamp() -> None:
    node = Node([A, A, B, B])
    node.run()
    assert [p["nvidia.com/gpu.count"] for p in node.published] == ["8", "7"]
    assert [p["nvidia.com/gfd.timestamp"] for p in node.published] == ["1005", "1015"]


def test_no_timestamp_leaves_the_label_out() -> None:
    node = Node([A])
    node.run(LoopTiming(interval=60, poll=0.001, with_timestamp=False))
    assert node.published == [A]


def test_a_failing_inventory_read_is_retried_and_the_loop_goes_on() -> None:
    node = Node([KgpuError("NVML failed while reading the GPU inventory"), A])
    state = node.run()
    assert node.published == [{**A, "nvidia.com/gfd.timestamp": "1010"}]
    assert state.last_error is None and state.publishes == 1


def test_a_failed_publish_is_retried_before_the_interval() -> None:
    node = Node([A] * 4)
    node.publish_failures.append(KgpuError("cannot reach the Kubernetes API server"))
    node.run()
    assert len(node.published) == 1  # retried after the backoff, not 60 s later


def test_oneshot_publishes_once_and_raises_on_failure() -> None:
    node = Node([A, A])
    node.run(oneshot=True)
    assert len(node.published) == 1
    failing = Node([KgpuError("bad config")])
    with pytest.raises(KgpuError, match="bad config"):
        failing.run(oneshot=True)


def test_health_is_ok_while_labels_are_published_and_503_once_publishing_fails_for_too_long() -> None:
    # Given a labeler whose publishing fails (the API server is away), ticked by the runtime
    node = Node([A] * 3)
    node.publish_failures.append(KgpuError("cannot reach the Kubernetes API server"))
    labeler = Labeler(node.compute, node.publish, LoopTiming(interval=1.0, poll=0.1))
    runtime = Daemon("labeler")
    watcher = runtime.watch("labels", labeler.tick, interval=0.1, unhealthy_after=0.0)
    endpoint = runtime.serve_http(parse_listen("127.0.0.1:0", "--healthz"))
    url = f"http://127.0.0.1:{endpoint.port}/healthz"
    try:
        assert urllib.request.urlopen(url, timeout=30).read().startswith(b"ok\n")  # nothing attempted yet
        watcher.step()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=30)
        assert info.value.code == 503
        assert b"labels: failing for 0 s: cannot reach the Kubernetes API server" in info.value.read()
        watcher.step()  # published at the retry
        assert urllib.request.urlopen(url, timeout=30).read().startswith(b"ok\n")
    finally:
        runtime.shutdown()


def test_a_config_that_became_invalid_keeps_the_labels_published() -> None:
    # Given labels published from a valid config, then a config file that no longer parses
    node = Node([A, ConfigError("config.yaml: sharing.timeSlicing.resources[0].replicas: 0 is below 1"), A], 60.0)
    state = node.run(LoopTiming(interval=60.0, poll=0.001))
    # Then the labels of the valid config were re-asserted, and the refusal is not a failure of the labeler
    assert len(node.published) == 3 and all(p["nvidia.com/gpu.count"] == "8" for p in node.published)
    assert state.last_error is None and state.config_refused == ""


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_the_labeler_process_follows_config_edits_and_removes_its_file_on_sigterm(tmp_path: Path) -> None:
    """Given a labeler writing an NFD feature file, when the config file changes, the file follows at once
    (well before the 60 s interval); when the labeler gets SIGTERM it exits 0 and removes the file, as GFD.
    The node has no DMI (as in many VMs): that is said once, not on every poll."""
    config = tmp_path / "plugin.yaml"
    config.write_text("version: v1\n")
    target = tmp_path / "features.d" / "kgpu"
    env = {k: v for k, v in os.environ.items() if k not in ("MIG_STRATEGY", "GFD_MIG_STRATEGY", "KGPU_SIMULATE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "a100-mig", "labeler", "--poll", "0.1", "--root", str(tmp_path),
         "--config-file", str(config), "--output-file", str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_for(target.exists)
        assert "nvidia.com/mig.strategy" not in parse_lines(target.read_text())
        config.write_text("version: v1\nflags:\n  migStrategy: mixed\n")
        wait_for(lambda: parse_lines(target.read_text()).get("nvidia.com/mig.strategy") == "mixed")
        assert parse_lines(target.read_text())["nvidia.com/mig-1g.10gb.count"] == "2"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert not target.exists()
    events = [json.loads(line)["msg"] for line in err.splitlines() if line.startswith("{")]
    assert "labels changed" in events and events[-1] == "labeler stopped"
    assert events.count("cannot read the machine type; labelling it unknown") == 1


def test_oneshot_keeps_the_file_and_exits(tmp_path: Path) -> None:
    target = tmp_path / "kgpu"
    proc = subprocess.run(
        [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "labeler", "--oneshot", "--root", str(tmp_path),
         "-o", str(target)], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert parse_lines(target.read_text())["nvidia.com/gpu.count"] == "8"


@pytest.mark.parametrize(("text", "seconds"), [("60", 60.0), ("60s", 60.0), ("1m30s", 90.0), ("1.5", 1.5),
                                               ("2h", 7200.0), ("1500ms", 1.5)])
def test_intervals_take_seconds_or_go_durations_as_gfd(text: str, seconds: float) -> None:
    assert parse_duration(text, "--interval") == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "0.5s", "1m-", ""])
def test_bad_intervals_are_named(text: str) -> None:
    with pytest.raises(KgpuError, match="--interval"):
        parse_duration(text, "--interval")


def test_gfd_environment_variables_drive_the_labeler(tmp_path: Path) -> None:
    target = tmp_path / "gfd-style"
    env = {k: v for k, v in os.environ.items() if k not in ("MIG_STRATEGY", "KGPU_SIMULATE")}
    env.update(GFD_ONESHOT="true", GFD_NO_TIMESTAMP="true", GFD_OUTPUT_FILE=str(target),
               GFD_MIG_STRATEGY="mixed", GFD_SLEEP_INTERVAL="30s")
    proc = subprocess.run([sys.executable, "-m", "kgpu", "--simulate", "a100-mig", "labeler", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    labels = parse_lines(target.read_text())
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert "nvidia.com/gfd.timestamp" not in labels
