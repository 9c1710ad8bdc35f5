"""Options every kgpu command shares (``--backend``, ``--simulate``, ``--driver-root``, ``--log-level``).

A plain value, importable without the command line's libraries, so that a daemon handed over to a
lean interpreter (:mod:`kgpu.handoff`) can open the same backend the command was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kgpu.gpu.backend import GPUBackend


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    backend: str = "auto"
    simulate: str | None = None
    simulate_events: Path | None = None
    driver_root: Path | None = None
    log_level: str = "info"

    def open_backend(self) -> GPUBackend:
        from kgpu.gpu.backend import open_backend

        return open_backend(
            self.backend,
            simulate=self.simulate,
            driver_root=self.driver_root,
            simulate_events=self.simulate_events,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "simulate": self.simulate,
            "simulate_events": None if self.simulate_events is None else str(self.simulate_events),
            "driver_root": None if self.driver_root is None else str(self.driver_root),
            "log_level": self.log_level,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GlobalOptions:
        events, root = data.get("simulate_events"), data.get("driver_root")
        return cls(
            backend=data.get("backend", "auto"),
            simulate=data.get("simulate"),
            simulate_events=None if events is None else Path(events),
            driver_root=None if root is None else Path(root),
            log_level=data.get("log_level", "info"),
        )
