"""Shared pieces of the DRA driver tests: claims as the API server serves them, an API stand-in, a driver."""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgpu.dra.daemon import DraDriver
from kgpu.dra.health import DeviceHealth
from kgpu.dra.state import DriverState
from kgpu.gpu import open_backend
from kgpu.gpu.model import Inventory
from kgpu.testing.dra import RecordingPublisher, StaticClaims, local_driver

DRIVER = "gpu.nvidia.com"
NODE = "node-1"
FAKE_MPS_CONTROL = Path(__file__).parent / "fakes" / "nvidia-cuda-mps-control"


def gpu_config(strategy: str = "MPS", **mps: Any) -> dict[str, Any]:
    sharing: dict[str, Any] = {"strategy": strategy}
    if mps:
        sharing["mpsConfig"] = mps
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": sharing}


def claim(
    name: str,
    devices: Sequence[str | tuple[str, str]],
    *,
    namespace: str = "default",
    memory: str | None = None,
    configs: Sequence[Mapping[str, Any]] = (),
    pool: str = NODE,
    driver: str = DRIVER,
    uid: str | None = None,
) -> dict[str, Any]:
    """A ResourceClaim as the API serves it once the scheduler allocated ``devices`` (names, or (request, name)).

    ``memory`` is the consumed memory capacity of each device (a share); ``configs`` are opaque parameters
    given in the claim (or ``{"source": "FromClass", "requests": [...], "parameters": {...}}`` entries).
    """
    results = []
    for d in devices:
        request, device = d if isinstance(d, tuple) else ("gpu", d)
        r: dict[str, Any] = {"request": request, "driver": driver, "pool": pool, "device": device}
        if memory is not None:
            r["consumedCapacity"] = {"memory": memory}
            r["shareID"] = str(uuidlib.uuid4())
        results.append(r)
    config = []
    for c in configs:
        if "parameters" in c:
            config.append({"source": c.get("source", "FromClaim"), "requests": list(c.get("requests", [])),
                           "opaque": {"driver": c.get("driver", driver), "parameters": c["parameters"]}})
        else:
            config.append({"source": "FromClaim", "requests": [], "opaque": {"driver": driver, "parameters": c}})
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuidlib.uuid4())},
        "status": {"allocation": {"devices": {"results": results, "config": config}}},
    }


def ref(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(namespace, uid, name): how the kubelet names a claim."""
    meta = obj["metadata"]
    return (meta["namespace"], meta["uid"], meta["name"])


@dataclass
class DriverRig:
    """A driver wired to stand-ins, with its files in ``root``."""

    root: Path
    claims: StaticClaims
    publisher: RecordingPublisher
    driver: DraDriver
    state: DriverState
    health: DeviceHealth
    inventory: Inventory
    backend: Any

    @property
    def registry(self) -> Path:
        return self.root / "plugins_registry"

    @property
    def cdi_root(self) -> Path:
        return self.root / "cdi"

    @property
    def checkpoint(self) -> Path:
        return self.state.checkpoint_path

    def cdi_specs(self) -> list[str]:
        return sorted(p.name for p in self.cdi_root.glob("*.json")) if self.cdi_root.exists() else []


def make_driver(
    root: Path,
    *,
    simulate: str = "h100x8",
    claims: StaticClaims | None = None,
    publisher: RecordingPublisher | None = None,
    shares: str = "memory",
    unhealthy: str = "remove",
    events: Path | None = None,
    recovery_window: float = 300.0,
    boot_id: str = "boot-1",
) -> DriverRig:
    backend = open_backend(simulate=simulate, simulate_events=events)
    claims = claims or StaticClaims()
    publisher = publisher or RecordingPublisher()
    driver = local_driver(root, backend, claims, publisher, mps_control=lambda: FAKE_MPS_CONTROL, driver=DRIVER,
                          node=NODE, shares=shares, unhealthy=unhealthy, recovery_window=recovery_window,
                          boot_id=lambda: boot_id)
    return DriverRig(root, claims, publisher, driver, driver.state, driver.health, backend.inventory(), backend)


class Running:
    """Runs a rig's driver in a thread for a ``with`` block; stops it (SIGTERM's path) on the way out."""

    def __init__(self, rig: DriverRig) -> None:
        self.rig = rig
        self.stop = threading.Event()
        self.thread = threading.Thread(target=rig.driver.run, args=(self.stop, rig.inventory), daemon=True)

    def __enter__(self) -> DriverRig:
        self.thread.start()
        return self.rig

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "the driver did not stop"
