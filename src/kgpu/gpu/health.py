"""Health events as backends report them, per device UUID."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


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
