"""Per-GPU MPS daemon status files: written by ``kgpu mps-daemon``, read by the device plugin.

``<mps-root>/<gpu-uuid>/status.json`` holds one :class:`DaemonStatus`, replaced atomically on
every check. A GPU's slices are healthy only while its file says ``running`` and is fresh:
a supervisor that died (its pod deleted, the node rebooting) stops refreshing the file, and the
slices go Unhealthy after ``max_age`` seconds without anybody having to clean up.

Example::

    watcher = MpsHealthWatcher(MpsPaths(), ["GPU-…"])
    for change in watcher.changes(stop):          # blocks; yields on every change
        print(change.uuid, change.healthy, change.reason)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError
from kgpu.fsio import read_text_or_none, write_atomic
from kgpu.sharing.paths import MpsPaths

DEFAULT_MAX_AGE_SECONDS = 15.0


class DaemonState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DOWN = "down"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    uuid: str
    state: DaemonState
    updated: float
    """Unix time of the last check."""
    pid: int | None = None
    restarts: int = 0
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "state": str(self.state),
            "updated": self.updated,
            "pid": self.pid,
            "restarts": self.restarts,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, raw: Any) -> DaemonStatus:
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        return cls(
            uuid=str(raw["uuid"]),
            state=DaemonState(raw["state"]),
            updated=float(raw["updated"]),
            pid=int(raw["pid"]) if raw.get("pid") is not None else None,
            restarts=int(raw.get("restarts", 0)),
            detail=str(raw.get("detail", "")),
        )


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` so readers see the old file or the new one, never half of it."""
    write_atomic(path, json.dumps(doc, indent=1) + "\n")


def write_status(paths: MpsPaths, status: DaemonStatus) -> None:
    write_json_atomic(paths.status_file(status.uuid), status.to_json())


def read_status(paths: MpsPaths, uuid: str) -> DaemonStatus | str:
    """The status of ``uuid``'s daemon, or why there is none."""
    path = paths.status_file(uuid)
    try:
        text = read_text_or_none(path)
        if text is None:
            return f"no MPS daemon status at {path}: is kgpu mps-daemon running on this node?"
        return DaemonStatus.from_json(json.loads(text))
    except (KgpuError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable MPS daemon status {path}: {exc}"


def judge(status: DaemonStatus | str, now: float, max_age: float = DEFAULT_MAX_AGE_SECONDS) -> tuple[bool, str]:
    """Healthy or not, and why. Pure."""
    if isinstance(status, str):
        return False, status
    if status.state is not DaemonState.RUNNING:
        detail = f": {status.detail}" if status.detail else ""
        return False, f"MPS daemon is {status.state}{detail}"
    age = now - status.updated
    if age > max_age:
        return False, f"MPS daemon status is {age:.0f} s old (limit {max_age:.0f} s): kgpu mps-daemon stopped checking"
    return True, "MPS daemon running"


@dataclass(frozen=True, slots=True)
class HealthChange:
    uuid: str
    healthy: bool
    reason: str


class MpsHealthWatcher:
    """Polls the status files of ``uuids`` and reports changes: a health source for the device plugin."""

    def __init__(
        self,
        paths: MpsPaths,
        uuids: Iterable[str],
        *,
        max_age: float = DEFAULT_MAX_AGE_SECONDS,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths
        self.uuids = tuple(uuids)
        self.max_age = max_age
        self.interval = interval
        self.clock = clock
        self._last: dict[str, bool] = {}

    def check(self) -> list[HealthChange]:
        """Read every file once; return what changed since the previous call (everything, the first time)."""
        now = self.clock()
        changes = []
        for uuid in self.uuids:
            healthy, reason = judge(read_status(self.paths, uuid), now, self.max_age)
            if self._last.get(uuid) != healthy:
                self._last[uuid] = healthy
                changes.append(HealthChange(uuid, healthy, reason))
        return changes

    def healthy(self, uuid: str) -> bool:
        return self._last.get(uuid, False)
