"""Health events as backends report them, per device UUID, and the feed a daemon reads them from."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class HealthEventKind(StrEnum):
    XID = "xid"
    """An XID error; ``HealthEvent.xid`` carries the code."""
    ECC = "ecc"
    """A double-bit (uncorrectable) ECC error."""
    LOST = "lost"
    """The GPU fell off the bus or NVML lost it."""
    RECOVERED = "recovered"
    """The GPU answers again (simulated injection, or a successful re-probe)."""


@dataclass(frozen=True, slots=True)
class HealthEvent:
    uuid: str
    kind: HealthEventKind
    xid: int | None = None
    timestamp: float = field(default_factory=time.time)
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"uuid": self.uuid, "kind": str(self.kind), "timestamp": self.timestamp}
        if self.xid is not None:
            out["xid"] = self.xid
        if self.detail:
            out["detail"] = self.detail
        return out


class HealthFeed(Protocol):
    """A backend's health events, read a slice at a time by a daemon's watcher.

    A feed keeps its place: when :meth:`poll` raises, calling it again goes on from where it was (a
    followed file is never read again from its start, NVML's event set is kept), so a supervised
    watcher can retry it after any failure without replaying or losing events.
    """

    def poll(self, timeout: float) -> list[HealthEvent]:
        """The events that arrived since the last call, waiting up to ``timeout`` seconds for the first."""
        ...

    def close(self) -> None: ...


POLL_SLICE_SECONDS = 0.25
"""How long one :meth:`HealthFeed.poll` waits: the longest a follower takes to notice that it must stop."""


def follow(feed: HealthFeed, stop: threading.Event) -> Iterator[HealthEvent]:
    """Every event of ``feed`` until ``stop`` is set (then the feed is closed)."""
    try:
        while not stop.is_set():
            yield from feed.poll(POLL_SLICE_SECONDS)
    finally:
        feed.close()
