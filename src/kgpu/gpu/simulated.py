"""A GPU backend that reads a YAML fixture instead of NVML, for CI and demos.

Health events are injected by appending JSON lines to a file the backend follows::

    {"uuid": "GPU-…", "kind": "xid", "xid": 79}
    {"uuid": "GPU-…", "kind": "recovered"}

The file is read from its beginning, so it doubles as the node's health history: a
process started later sees the same state as one that was running all along.

Whatever the file holds, it never stops health tracking: a line is at most
:data:`MAX_EVENT_LINE_BYTES` long (a longer one is skipped without being held in memory), must be a
flat JSON object with a string ``uuid`` of this node, a known ``kind`` and, for an XID, an integer
``xid``; anything else is a warning — logged once per kind of problem per minute, with the line
number — and never a health change. A feed reads each line once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from kgpu.errors import BackendError
from kgpu.gpu.fixture import NodeSpec, build_inventory, fixture_readings, parse_fixture, read_fixture_text
from kgpu.gpu.health import HealthEvent, HealthEventKind
from kgpu.gpu.migstate import apply_mig_state, read_mig_state
from kgpu.gpu.model import GPUReadings, Inventory
from kgpu.log import ProblemLog, cut

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02
MAX_EVENT_LINE_BYTES = 4096
"""An event is ~100 bytes; a line longer than this is refused (and never buffered whole)."""
READ_CHUNK_BYTES = 1 << 20
"""Bytes read from the events file at a time: a huge append is worked through a chunk per poll."""
MAX_XID = 2**31 - 1
_KINDS = ", ".join(k.value for k in HealthEventKind)
_EXAMPLE = '{"uuid": "GPU-…", "kind": "xid", "xid": 79}'


class BadEvent(ValueError):
    """An events line that is not a health event; ``cause`` groups lines with the same problem."""

    def __init__(self, source: str, cause: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.cause = cause


def parse_event_line(line: str, source: str, known_uuids: set[str]) -> HealthEvent:
    """Parse one injected event; raises :class:`BadEvent` naming what is wrong (values cut short)."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested too deep
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise BadEvent(source, "not JSON", f"not JSON: {why}; expected an object such as {_EXAMPLE}") from None
    if not isinstance(raw, dict):
        raise BadEvent(source, "not an object", f"expected an object such as {_EXAMPLE}, got {_short(raw)}")
    uuid, kind_text, xid, detail = raw.get("uuid"), raw.get("kind"), raw.get("xid"), raw.get("detail", "")
    if not isinstance(uuid, str):
        raise BadEvent(source, "uuid not a string", f"uuid must be a string (a GPU or MIG UUID), got {_short(uuid)}")
    if uuid not in known_uuids:
        raise BadEvent(source, "unknown uuid", f"uuid {_short(uuid)} is not a GPU or MIG device of this node")
    if not isinstance(kind_text, str) or kind_text not in {k.value for k in HealthEventKind}:
        raise BadEvent(source, "unknown kind", f"kind {_short(kind_text)} is not one of {_KINDS}")
    kind = HealthEventKind(kind_text)
    if kind is HealthEventKind.XID and (isinstance(xid, bool) or not isinstance(xid, int) or not 0 <= xid <= MAX_XID):
        raise BadEvent(source, "xid not an integer",
                       f"an xid event needs an integer 'xid' field from 0 to {MAX_XID}, got {_short(xid)}")
    if not isinstance(detail, str):
        raise BadEvent(source, "detail not a string", f"detail must be a string, got {_short(detail)}")
    return HealthEvent(uuid=uuid, kind=kind, xid=xid if kind is HealthEventKind.XID else None, detail=cut(detail, 200))


def _short(value: object) -> str:
    """A value as a line shows it: its JSON, cut to about 100 characters."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = repr(type(value))
    return cut(text, 100)


class _EventFollower:
    """Reads complete lines appended to a file, surviving its absence and truncation; bounded in memory.

    A line longer than :data:`MAX_EVENT_LINE_BYTES` comes out as ``None`` in its place (its bytes are
    dropped as they are read, never collected).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self._too_long = False
        self.line_number = 0

    def read_new_lines(self) -> list[tuple[int, str | None]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._inode, self._offset, self._partial, self._too_long, self.line_number = st.st_ino, 0, b"", False, 0
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(READ_CHUNK_BYTES)
        self._offset += len(data)
        *complete, rest = data.split(b"\n")
        out: list[tuple[int, str | None]] = []
        for i, raw in enumerate(complete):
            self.line_number += 1
            if i == 0:
                raw, self._partial = self._partial + raw, b""
            if self._too_long or len(raw) > MAX_EVENT_LINE_BYTES:
                out.append((self.line_number, None))
                self._too_long = False
                continue
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                out.append((self.line_number, text))
        if complete:
            self._partial = b""
        if self._too_long or len(self._partial) + len(rest) > MAX_EVENT_LINE_BYTES:
            self._partial, self._too_long = b"", True  # the rest of this line is dropped as it comes
        else:
            self._partial += rest
        return out


class SimulatedHealthFeed:
    """Follows the events file from its first line; each line is read and judged once."""

    def __init__(self, path: Path, known_uuids: set[str]) -> None:
        self.path = path
        self._known = known_uuids
        self._follower = _EventFollower(path)
        self._problems = ProblemLog(log)

    def poll(self, timeout: float) -> list[HealthEvent]:
        deadline = time.monotonic() + timeout
        while True:
            events = self._parse(self._follower.read_new_lines())
            if events or time.monotonic() >= deadline:
                return events
            time.sleep(POLL_SECONDS)

    def _parse(self, lines: list[tuple[int, str | None]]) -> list[HealthEvent]:
        events = []
        for number, line in lines:
            source = f"{self.path}:{number}"
            try:
                if line is None:
                    raise BadEvent(source, "line too long", f"line longer than {MAX_EVENT_LINE_BYTES} bytes")
                events.append(parse_event_line(line, source, self._known))
            except BadEvent as exc:
                self._problems.report(exc.cause, f"ignoring injected health event: {exc}", event="health")
        return events

    def close(self) -> None:
        pass


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
    def open(cls, name_or_path: str, events_file: Path | None = None,
             mig_state: Path | None = None) -> SimulatedBackend:
        """The fixture, with the MIG layout ``kgpu mig-manager`` left in ``mig_state`` (if that file exists)."""
        source, text = read_fixture_text(name_or_path)
        spec = parse_fixture(source, text)
        if mig_state is not None:

            spec = apply_mig_state(spec, read_mig_state(mig_state))
        return cls(spec, source, events_file)

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
                    event = parse_event_line(line or "", f"{self.events_file}:{number}", self._known)
                except BadEvent:
                    continue  # reported by the health feed; state ignores bad lines
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

    def health_feed(self) -> SimulatedHealthFeed | _NoEvents:
        if self.events_file is None:
            return _NoEvents()
        return SimulatedHealthFeed(self.events_file, self._known)

    def close(self) -> None:
        pass


class _NoEvents:
    """The feed of a simulated node without an events file: nothing ever happens."""

    def poll(self, timeout: float) -> list[HealthEvent]:
        time.sleep(timeout)
        return []

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
