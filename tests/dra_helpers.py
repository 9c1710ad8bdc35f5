"""Shared pieces of the DRA driver tests: claims as the API server serves them, an API stand-in, a driver."""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.deviceplugin.health import XidPolicy
from kgpu.dra.claims import ClaimError
from kgpu.dra.daemon import DraDriver, DriverSettings
from kgpu.dra.devices import ConsumableShares, DraDevice, build_devices
from kgpu.dra.health import DeviceHealth
from kgpu.dra.mps import MpsDaemons
from kgpu.dra.prepare import PrepareSettings
from kgpu.dra.state import DriverState
from kgpu.gpu import open_backend
from kgpu.gpu.model import Inventory
from kgpu.sharing.paths import MpsPaths

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


class StaticClaims:
    """The API's ResourceClaims, kept in memory."""

    def __init__(self, *claims: Mapping[str, Any]) -> None:
        self.claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): dict(c) for c in claims}
        self.reads = 0

    def add(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        self.claims[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = dict(obj)
        return obj

    def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads += 1
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise ClaimError(f"ResourceClaim {namespace}/{name} does not exist") from None


@dataclass
class RecordingPublisher:
    """The API's ResourceSlices of this node: what the driver applied, with every apply kept in order."""

    node: str = NODE
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: list[list[dict[str, Any]]] = field(default_factory=list)
    fail: int = 0
    """Refuse the next ``fail`` applies, as an unreachable API server would."""
    cond: threading.Condition = field(default_factory=threading.Condition)

    def owner(self) -> dict[str, str]:
        return {"name": self.node, "uid": "node-uid-1"}

    def existing(self) -> dict[str, int]:
        with self.cond:
            return {n: s["spec"]["pool"]["generation"] for n, s in self.slices.items()}

    def apply(self, slices: Sequence[Mapping[str, Any]]) -> None:
        with self.cond:
            if self.fail:
                self.fail -= 1
                raise OSError("connection refused")
            self.slices = {s["metadata"]["name"]: dict(s) for s in slices}
            self.applied.append([dict(s) for s in slices])
            self.cond.notify_all()

    def wipe(self) -> None:
        """What a starting kubelet does to its node's slices."""
        with self.cond:
            self.slices.clear()

    def devices(self) -> list[str]:
        with self.cond:
            return [d["name"] for s in self.slices.values() for d in s["spec"]["devices"]]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The latest applied slices once ``predicate(devices by name)`` holds."""
        def now() -> dict[str, dict[str, Any]]:
            return {d["name"]: d for s in self.slices.values() for d in s["spec"]["devices"]}

        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.applied) and predicate(now()), timeout):
                raise TimeoutError(f"slices never matched; last: {sorted(now())}")
            return list(self.slices.values())


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
    inventory = backend.inventory()
    claims = claims or StaticClaims()
    publisher = publisher or RecordingPublisher()
    paths = MpsPaths(root / "mps")
    mps = MpsDaemons(paths, binary=lambda: FAKE_MPS_CONTROL, start_timeout=10.0)
    health = DeviceHealth(XidPolicy(), parents={m.uuid: m.parent_uuid for m in inventory.mig_devices},
                          recovery_window=recovery_window)
    driver: DraDriver | None = None

    def devices() -> dict[str, DraDevice]:
        assert driver is not None
        return driver.devices_by_name()

    state = DriverState(PrepareSettings(DRIVER, NODE, paths), devices, claims,
                        root / "plugins" / DRIVER / "kgpu-checkpoint.json", root / "cdi", mps,
                        boot_id=lambda: boot_id)
    settings = DriverSettings(driver=DRIVER, node=NODE, registry_dir=root / "plugins_registry",
                              plugins_dir=root / "plugins", unhealthy=unhealthy, rescan_interval=0)
    mode = ConsumableShares.parse(shares)
    driver = DraDriver(settings, state, health, publisher, lambda inv: build_devices(inv, {}, mode), backend=backend)
    return DriverRig(root, claims, publisher, driver, state, health, inventory, backend)


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
