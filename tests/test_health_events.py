"""Health events injected into a simulated node's events file reach every subscriber."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgpu.gpu import BackendError, HealthEvent, HealthEventKind, open_backend
from kgpu.gpu.health import follow
from kgpu.gpu.simulated import MAX_EVENT_LINE_BYTES, SimulatedBackend, inject_event


@pytest.fixture
def node(tmp_path: Path) -> SimulatedBackend:
    backend = open_backend(simulate="h100x8", simulate_events=tmp_path / "events.jsonl")
    assert isinstance(backend, SimulatedBackend)
    return backend


@pytest.fixture
def stream(node: SimulatedBackend) -> Iterator[queue.Queue[HealthEvent]]:
    events: queue.Queue[HealthEvent] = queue.Queue()
    stop = threading.Event()

    def consume() -> None:
        for event in follow(node.health_feed(), stop):
            events.put(event)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    yield events
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_injected_xid_is_observed_with_its_code(node: SimulatedBackend, stream: queue.Queue[HealthEvent]) -> None:
    gpu = node.inventory().gpus[3]
    assert node.events_file is not None
    inject_event(node.events_file, gpu.uuid, "xid", 79)
    event = stream.get(timeout=30)
    assert (event.uuid, event.kind, event.xid) == (gpu.uuid, HealthEventKind.XID, 79)


def test_lost_gpu_fails_reads_until_recovered(node: SimulatedBackend, stream: queue.Queue[HealthEvent]) -> None:
    gpu = node.inventory().gpus[0]
    assert node.events_file is not None
    inject_event(node.events_file, gpu.uuid, "lost")
    assert stream.get(timeout=30).kind is HealthEventKind.LOST
    assert not node.probe(gpu.uuid)
    with pytest.raises(BackendError, match="lost"):
        node.readings(gpu.uuid)
    inject_event(node.events_file, gpu.uuid, "recovered")
    assert stream.get(timeout=30).kind is HealthEventKind.RECOVERED
    assert node.probe(gpu.uuid)
    assert node.readings(gpu.uuid).uuid == gpu.uuid


def test_bad_lines_are_skipped_and_later_events_still_arrive(
    node: SimulatedBackend, stream: queue.Queue[HealthEvent], caplog: pytest.LogCaptureFixture
) -> None:
    gpu = node.inventory().gpus[1]
    assert node.events_file is not None
    with open(node.events_file, "a") as f:
        f.write("not json\n")
        f.write('{"uuid": "GPU-00000000-0000-0000-0000-000000000000", "kind": "xid", "xid": 1}\n')
        f.write(f'{{"uuid": "{gpu.uuid}", "kind": "meltdown"}}\n')
        f.write(f'{{"uuid": "{gpu.uuid}", "kind": "xid"}}\n')
    inject_event(node.events_file, gpu.uuid, "ecc")
    event = stream.get(timeout=30)
    assert (event.uuid, event.kind) == (gpu.uuid, HealthEventKind.ECC)
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "events.jsonl:1: not JSON" in warnings
    assert "is not a GPU or MIG device of this node" in warnings
    assert '"meltdown" is not one of xid, ecc, lost, recovered' in warnings
    assert "needs an integer 'xid'" in warnings


def test_history_written_before_start_is_replayed(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    backend = open_backend(simulate="a100-mig", simulate_events=events_file)
    mig = backend.inventory().mig_devices[2]
    inject_event(events_file, mig.uuid, "xid", 48)
    stop = threading.Event()
    first = next(iter(follow(backend.health_feed(), stop)))
    stop.set()
    assert (first.uuid, first.xid) == (mig.uuid, 48)


def test_events_file_created_after_start_is_followed(tmp_path: Path) -> None:
    events_file = tmp_path / "later.jsonl"
    backend = open_backend(simulate="t4", simulate_events=events_file)
    gpu = backend.inventory().gpus[0]
    got: queue.Queue[HealthEvent] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [got.put(e) for e in follow(backend.health_feed(), stop)], daemon=True)
    thread.start()
    inject_event(events_file, gpu.uuid, "lost")
    assert got.get(timeout=30).kind is HealthEventKind.LOST
    stop.set()
    thread.join(timeout=30)


def test_lost_mig_device_takes_its_parent_gpu_down(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    backend = open_backend(simulate="a100-mig", simulate_events=events_file)
    parent = backend.inventory().gpus[0]
    inject_event(events_file, parent.mig_devices[0].uuid, "lost")
    assert not backend.probe(parent.uuid)
    assert backend.probe(backend.inventory().gpus[1].uuid)


POISON = [
    '{"uuid": ["GPU-a", "GPU-b"], "kind": "xid", "xid": 79}',       # uuid a list
    '{"uuid": {"nested": "GPU-a"}, "kind": "xid", "xid": 79}',      # uuid an object
    "[" * 100_000 + "]" * 100_000,                                    # nested far too deep (and too long)
    "[" * 1_500 + "]" * 1_500,                                        # nested too deep, short enough
    '{"uuid": "%s", "kind": "xid", "xid": true}',                   # xid a boolean
    '{"uuid": "%s", "kind": "xid", "xid": "79"}',                   # xid a string
    '{"uuid": "%s", "kind": "xid", "xid": 1e400}',                  # xid a float
    '{"uuid": "%s", "kind": ["xid"], "xid": 79}',                   # kind a list
    '{"uuid": "%s", "kind": "xid", "xid": 79, "detail": {"a": 1}}',  # detail an object
    '{"uuid": "' + "G" * 10_000_000 + '", "kind": "xid", "xid": 79}',  # a 10 MB line
]


def test_poison_lines_are_warnings_and_a_real_xid_after_them_still_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a node whose events file starts with every kind of poison, twice over
    events_file = tmp_path / "events.jsonl"
    backend = open_backend(simulate="h100x8", simulate_events=events_file)
    gpu = backend.inventory().gpus[2]
    with open(events_file, "w") as f:
        for _ in range(2):
            for line in POISON:
                f.write((line % gpu.uuid if "%s" in line else line) + "\n")
    inject_event(events_file, gpu.uuid, "xid", 79)
    feed = backend.health_feed()
    # When the feed reads it all, the only event is the real XID, with its code
    got: list[HealthEvent] = []
    while not got:
        got = feed.poll(5.0)
    assert [(e.uuid, e.kind, e.xid) for e in got] == [(gpu.uuid, HealthEventKind.XID, 79)]
    # And each kind of problem was said once, in a line of bounded size, naming the line and the limit
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 6, messages  # one per kind of problem, not one per line
    assert all(len(m) < 400 for m in messages)
    text = " ".join(messages)
    assert "events.jsonl:1: uuid must be a string (a GPU or MIG UUID), got [" in text
    assert f"events.jsonl:3: line longer than {MAX_EVENT_LINE_BYTES} bytes" in text
    assert "events.jsonl:4: not JSON: nested too deep" in text
    assert "an xid event needs an integer 'xid' field from 0 to 2147483647, got true" in text
    assert "detail must be a string" in text
    # Nothing is read twice: the file is followed, not replayed
    assert feed.poll(0.05) == []
