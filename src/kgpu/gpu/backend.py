"""The one small interface every GPU backend implements, and how a backend is chosen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from kgpu.errors import BackendError
from kgpu.gpu.health import HealthFeed
from kgpu.gpu.model import GPUReadings, Inventory

BACKEND_NAMES = ("auto", "nvml", "simulated")
__all__ = ["BACKEND_NAMES", "BackendError", "GPUBackend", "open_backend"]


class GPUBackend(Protocol):
    """What kgpu needs from a source of GPU facts.

    ``inventory`` is static and cheap to call again (backends cache it);
    ``readings`` touches sensors; ``health_feed`` opens a :class:`~kgpu.gpu.health.HealthFeed` of XID,
    ECC and lost/recovered events (:func:`kgpu.gpu.health.follow` iterates one until a stop event).
    """

    name: str

    def inventory(self) -> Inventory: ...

    def readings(self, uuid: str) -> GPUReadings: ...

    def health_feed(self) -> HealthFeed: ...

    def probe(self, uuid: str) -> bool:
        """True when the GPU answers basic queries again (used to recover unhealthy devices)."""
        ...

    def close(self) -> None: ...


def open_backend(
    backend: str = "auto",
    *,
    simulate: str | None = None,
    driver_root: Path | None = None,
    simulate_events: Path | None = None,
) -> GPUBackend:
    """Open the backend a user asked for.

    ``simulate`` (a built-in fixture name or a YAML path) implies the simulated backend.
    ``auto`` means NVML when it loads; otherwise the NVML error, which says how to simulate.
    """
    if backend not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {backend!r}: allowed values are {', '.join(BACKEND_NAMES)}")
    simulate = simulate or os.environ.get("KGPU_SIMULATE") or None
    # Each backend is imported when asked for: the simulated one loads pydantic for its fixtures and the
    # NVML one pynvml; neither belongs in the start-up of a command that uses the other.
    if backend == "simulated" or (backend == "auto" and simulate):
        from kgpu.gpu.simulated import SimulatedBackend

        events_env = os.environ.get("KGPU_SIMULATE_EVENTS")
        events = simulate_events or (Path(events_env) if events_env else None)
        mig_env = os.environ.get("KGPU_SIMULATE_MIG_STATE")
        return SimulatedBackend.open(simulate or "h100x8", events_file=events,
                                     mig_state=Path(mig_env) if mig_env else None)
    from kgpu.gpu.nvml import NvmlBackend

    return NvmlBackend.open(driver_root=driver_root)
