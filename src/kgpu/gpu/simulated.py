"""A GPU backend that reads a YAML fixture instead of NVML, for CI and demos.

Health events are injected by appending JSON lines to a file the backend follows::

    {"uuid": "GPU-…", "kind": "xid", "xid": 79}
    {"uuid": "GPU-…", "kind": "recovered"}

The file is read from its beginning, so it doubles as the node's health history: a
process started later sees the same state as one that was running all along.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kgpu.gpu.backend import BackendError
from kgpu.gpu.fixture import NodeSpec, build_inventory, fixture_readings, parse_fixture, read_fixture_text
from kgpu.gpu.health import HealthEvent, HealthEventKind
from kgpu.gpu.model import GPUReadings, Inventory

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02


def parse_event_line(line: str, source: str, known_uuids: set[str]) -> HealthEvent:
    """Parse one injected event; raises ValueError naming what is wrong."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f'{source}: expected an object such as {{"uuid": "GPU-…", "kind": "xid", "xid": 79}}')
    uuid = raw.get("uuid")
    if uuid not in known_uuids:
        raise ValueError(f"{source}: uuid {uuid!r} is not a GPU or MIG device of this node")
    try:
        kind = HealthEventKind(str(raw.get("kind")))
    except ValueError:
        allowed = ", ".join(k.value for k in HealthEventKind)
        raise ValueError(f"{source}: kind {raw.get('kind')!r} is not one of {allowed}") from None
    xid = raw.get("xid")
    if kind is HealthEventKind.XID and not isinstance(xid, int):
        raise ValueError(f"{source}: an xid event needs an integer 'xid' field, got {xid!r}")
    return HealthEvent(uuid=uuid, kind=kind, xid=xid if kind is HealthEventKind.XID else None,
                       detail=str(raw.get("detail", "")))


class _EventFollower:
    """Reads complete lines appended to a file, surviving its absence and truncation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self.line_number = 0

    def read_new_lines(self) -> list[tuple[int, str]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._inode, self._offset, self._partial, self.line_number = st.st_ino, 0, b"", 0
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        out = []
        for raw in complete:
            self.line_number += 1
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                out.append((self.line_number, text))
        return out


class SimulatedBackend:
    name = "simulated"

    def __init__(self, spec: NodeSpec, source: str, events_file: Path | None = None) -> None:
        self.spec = spec
        self.source = source
        self.events_file = events_file
        self._inventory = build_inventory(spec)
        self._known = {g.uuid for g in self._inventory.gpus} | {m.uuid for m in self._inventory.mig_devices}
        self._lost: set[str] = set()
        self._state_lock = threading.Lock()
        self._state_follower = _EventFollower(events_file) if events_file else None

    @classmethod
    def open(cls, name_or_path: str, events_file: Path | None = None) -> SimulatedBackend:
        source, text = read_fixture_text(name_or_path)
        return cls(parse_fixture(source, text), source, events_file)

    def inventory(self) -> Inventory:
        return self._inventory

    def _parent_uuid(self, uuid: str) -> str:
        for m in self._inventory.mig_devices:
            if m.uuid == uuid:
                return m.parent_uuid
        return uuid

    def _sync_state(self) -> None:
        """Apply lost/recovered events so readings and probes agree with the injected history."""
        if self._state_follower is None:
            return
        with self._state_lock:
            for number, line in self._state_follower.read_new_lines():
                try:
                    event = parse_event_line(line, f"{self.events_file}:{number}", self._known)
                except ValueError:
                    continue  # reported once by health_events(); state ignores bad lines
                if event.kind is HealthEventKind.LOST:
                    self._lost.add(self._parent_uuid(event.uuid))
                elif event.kind is HealthEventKind.RECOVERED:
                    self._lost.discard(self._parent_uuid(event.uuid))

    def readings(self, uuid: str) -> GPUReadings:
        self._sync_state()
        spec = next((g for g in self.spec.gpus if g.uuid == uuid), None)
        if spec is None:
            raise BackendError(f"no GPU with UUID {uuid} on this simulated node ({self.source})")
        if uuid in self._lost:
            raise BackendError(f"GPU {uuid} is lost (injected event); its sensors cannot be read")
        if spec.readings.fail:
            raise BackendError(f"GPU {uuid}: reading sensors failed (fixture sets readings.fail)")
        return fixture_readings(spec)

    def probe(self, uuid: str) -> bool:
        self._sync_state()
        return uuid in self._known and self._parent_uuid(uuid) not in self._lost

    def health_events(self, stop: threading.Event) -> Iterator[HealthEvent]:
        if self.events_file is None:
            stop.wait()
            return
        follower = _EventFollower(self.events_file)
        while not stop.is_set():
            for number, line in follower.read_new_lines():
                try:
                    yield parse_event_line(line, f"{self.events_file}:{number}", self._known)
                except ValueError as exc:
                    log.warning("ignoring injected health event: %s", exc)
            stop.wait(POLL_SECONDS)

    def close(self) -> None:
        pass


def inject_event(path: Path, uuid: str, kind: str, xid: int | None = None) -> None:
    """Append one event line (used by tests, benches and the demo)."""
    record: dict[str, object] = {"uuid": uuid, "kind": kind, "ts": time.time()}
    if xid is not None:
        record["xid"] = xid
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
