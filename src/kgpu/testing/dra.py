"""A stand-in for the kubelet's side of DRA, speaking the real gRPC over unix sockets.

:class:`DraKubelet` does what the kubelet's plugin watcher and DRA manager do with a driver: it watches a
registration directory for sockets, calls ``GetInfo``, checks the answer as the kubelet does (type
``DRAPlugin``, a driver name that is a DNS subdomain, an endpoint that exists, the ``v1.DRAPlugin``
service), answers ``NotifyRegistrationStatus``, and records the registration. :class:`DraClient` then
calls the driver's endpoint as the kubelet does: ``NodePrepareResources``, ``NodeUnprepareResources``,
and ``NodeWatchResources`` followed in the background (:class:`HealthWatch`). The API server's side, for a
driver run in-process: :class:`StaticClaims` (the claims it reads) and :class:`RecordingPublisher` (the
slices it publishes); :func:`local_driver` wires a driver whose files all live under one directory, and
:class:`RunningDriver` runs it in a thread (what ``kgpu dra-plugin`` does in its main thread).

Example::

    with DraKubelet(registry_dir) as kubelet:
        # ... start `kgpu dra-plugin --kubelet-registrar-directory-path <registry_dir> ...` ...
        reg = kubelet.wait_for_registration("gpu.nvidia.com")
        with kubelet.client("gpu.nvidia.com") as plugin:
            answer = plugin.prepare([("default", claim_uid, "my-claim")])
            answer.claims[claim_uid].devices[0].cdi_device_ids
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from kgpu.deviceplugin.health import XidPolicy
from kgpu.dra.api import DRA_SERVICE_V1, PLUGIN_TYPE
from kgpu.dra.api import dra_pb2 as dra
from kgpu.dra.api import dra_pb2_grpc as dra_grpc
from kgpu.dra.api import drahealth_pb2 as health
from kgpu.dra.api import drahealth_pb2_grpc as health_grpc
from kgpu.dra.api import pluginregistration_pb2 as reg
from kgpu.dra.api import pluginregistration_pb2_grpc as reg_grpc
from kgpu.dra.checkpoint import current_boot_id
from kgpu.dra.claims import ClaimError
from kgpu.dra.daemon import DraDriver, DriverSettings, Publisher
from kgpu.dra.devices import ConsumableShares, DraDevice, build_devices
from kgpu.dra.health import DeviceHealth
from kgpu.dra.mps import MpsDaemons
from kgpu.dra.prepare import NodeEdits, PrepareSettings
from kgpu.dra.state import ClaimSource, DriverState
from kgpu.gpu.backend import GPUBackend
from kgpu.gpu.model import Inventory
from kgpu.sharing.paths import MpsPaths

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class Registration:
    socket: Path
    name: str
    endpoint: str
    versions: tuple[str, ...]
    accepted: bool
    error: str
    at: float
    """time.monotonic() when the kubelet stand-in answered NotifyRegistrationStatus."""


def check_info(info: reg.PluginInfo) -> str:
    """Why the kubelet would refuse this PluginInfo; empty when it accepts it."""
    if info.type != PLUGIN_TYPE:
        return f"plugin type {info.type!r} is not {PLUGIN_TYPE}"
    if not _DNS_SUBDOMAIN.match(info.name):
        return f"driver name {info.name!r} is not a DNS subdomain"
    if not info.endpoint or not Path(info.endpoint).is_socket():
        return f"endpoint {info.endpoint!r} is not a socket"
    if DRA_SERVICE_V1 not in info.supported_versions:
        return f"none of the supported versions {list(info.supported_versions)} is {DRA_SERVICE_V1}"
    return ""


class DraKubelet:
    """Watches a registration directory and registers the DRA plugins that appear in it."""

    def __init__(self, registry_dir: Path, poll: float = 0.05) -> None:
        self.registry_dir = registry_dir
        self.poll = poll
        self._cond = threading.Condition()
        self._registrations: list[Registration] = []
        self._seen: dict[Path, tuple[int, int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DraKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DraKubelet:
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._watch, name="dra-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def forget(self) -> None:
        """Drop every registration, as a restarted kubelet would, and register again what is there."""
        with self._cond:
            self._registrations.clear()
            self._seen.clear()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                sockets = [p for p in self.registry_dir.iterdir() if p.is_socket()]
            except OSError:
                continue
            for gone in set(self._seen) - set(sockets):
                del self._seen[gone]  # the plugin went away (the kubelet's watcher sees the delete)
            for path in sockets:
                try:
                    st = path.stat()
                except OSError:
                    continue
                identity = (st.st_dev, st.st_ino, st.st_ctime_ns)
                if self._seen.get(path) == identity:
                    continue
                if self._register(path):
                    self._seen[path] = identity

    def _register(self, path: Path) -> bool:
        try:
            with grpc.insecure_channel(f"unix://{path}") as channel:
                stub = reg_grpc.RegistrationStub(channel)
                info = stub.GetInfo(reg.InfoRequest(), timeout=5)
                error = check_info(info)
                stub.NotifyRegistrationStatus(reg.RegistrationStatus(plugin_registered=not error, error=error),
                                              timeout=5)
        except grpc.RpcError:
            return False  # not serving yet: try again on the next poll
        record = Registration(path, info.name, info.endpoint, tuple(info.supported_versions), not error, error,
                              time.monotonic())
        with self._cond:
            self._registrations.append(record)
            self._cond.notify_all()
        return True

    @property
    def registrations(self) -> list[Registration]:
        with self._cond:
            return list(self._registrations)

    def wait_for_registration(self, driver: str, timeout: float = 30.0, after: float = 0.0) -> Registration:
        """The first accepted registration of ``driver`` made after ``after`` (a time.monotonic() value)."""
        def found() -> Registration | None:
            return next((r for r in self._registrations if r.name == driver and r.accepted and r.at > after), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"no registration of DRA driver {driver!r} in {self.registry_dir} within {timeout}s"
                                   f" (seen: {[(r.name, r.error) for r in self._registrations]})")
            record = found()
        assert record is not None
        return record

    def client(self, driver: str, timeout: float = 30.0) -> DraClient:
        return DraClient(Path(self.wait_for_registration(driver, timeout).endpoint))


class DraClient:
    """Calls a DRA plugin's endpoint as the kubelet does."""

    def __init__(self, endpoint: Path) -> None:
        self.endpoint = endpoint
        self._channel = grpc.insecure_channel(f"unix://{endpoint}")
        self._dra = dra_grpc.DRAPluginStub(self._channel)
        self._health = health_grpc.DRAResourceHealthStub(self._channel)

    def __enter__(self) -> DraClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def prepare(self, claims: Sequence[tuple[str, str, str]],
                timeout: float = 60.0) -> dra.NodePrepareResourcesResponse:
        """``claims`` as (namespace, uid, name)."""
        request = dra.NodePrepareResourcesRequest(
            claims=[dra.Claim(namespace=ns, uid=uid, name=name) for ns, uid, name in claims])
        response: dra.NodePrepareResourcesResponse = self._dra.NodePrepareResources(request, timeout=timeout,
                                                                                    wait_for_ready=True)
        return response

    def unprepare(self, claims: Sequence[tuple[str, str, str]],
                  timeout: float = 60.0) -> dra.NodeUnprepareResourcesResponse:
        request = dra.NodeUnprepareResourcesRequest(
            claims=[dra.Claim(namespace=ns, uid=uid, name=name) for ns, uid, name in claims])
        response: dra.NodeUnprepareResourcesResponse = self._dra.NodeUnprepareResources(request, timeout=timeout,
                                                                                        wait_for_ready=True)
        return response

    def watch_health(self) -> HealthWatch:
        return HealthWatch(self._health)


class HealthWatch:
    """A NodeWatchResources stream read in the background; every list it sends is kept, in order."""

    def __init__(self, stub: Any) -> None:
        self._cond = threading.Condition()
        self.updates: list[dict[str, tuple[int, str]]] = []
        """Each update: device name → (HealthStatus value, message)."""
        self.error: grpc.RpcError | None = None
        self._call = stub.NodeWatchResources(health.NodeWatchResourcesRequest(), wait_for_ready=True)
        self._thread = threading.Thread(target=self._read, name="dra-health-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                update = {d.device.device_name: (d.health, d.message) for d in response.devices}
                with self._cond:
                    self.updates.append(update)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, tuple[int, str]]], bool],
                 timeout: float = 30.0) -> dict[str, tuple[int, str]]:
        """The latest update once it satisfies ``predicate`` (older updates are never looked at)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: bool(self.updates) and predicate(self.updates[-1]), timeout)
            if not ok:
                raise TimeoutError(f"health stream: no matching update within {timeout}s "
                                   f"(last: {self.updates[-1] if self.updates else None}, error: {self.error})")
            return self.updates[-1]

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=5)


class StaticClaims:
    """The API's ResourceClaims, kept in memory: a stand-in for :class:`kgpu.dra.kube.ApiClaims`."""

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
    """The API's ResourceSlices of this node: what the driver applied, with every apply kept in order.

    Stands in for :class:`kgpu.dra.kube.SlicePublisher` (the driver's ``publisher``)."""

    node: str = "node-1"
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


def local_driver(
    root: Path,
    backend: GPUBackend,
    claims: ClaimSource,
    publisher: Publisher | None,
    *,
    mps_control: Callable[[], Path],
    library_dir: Path | None = None,
    driver: str = "gpu.nvidia.com",
    node: str = "node-1",
    shares: str = "memory",
    unhealthy: str = "remove",
    node_edits: NodeEdits | None = None,
    shm_dir: str | None = None,
    recovery_window: float = 300.0,
    boot_id: Callable[[], str] = current_boot_id,
) -> DraDriver:
    """A driver as ``kgpu dra-plugin`` builds one, with its registration directory (``root/plugins_registry``),
    plugin directory and checkpoint (``root/plugins``), CDI specs (``root/cdi``) and MPS root (``root/mps``)."""
    inventory = backend.inventory()
    paths = MpsPaths(root / "mps")
    mps = MpsDaemons(paths, binary=mps_control, library_dir=library_dir)
    health = DeviceHealth(XidPolicy(), parents={m.uuid: m.parent_uuid for m in inventory.mig_devices},
                          recovery_window=recovery_window)
    built: list[DraDriver] = []

    def devices() -> dict[str, DraDevice]:
        return built[0].devices_by_name()

    state = DriverState(PrepareSettings(driver, node, paths, shm_dir=shm_dir), devices, claims,
                        root / "plugins" / driver / "kgpu-checkpoint.json", root / "cdi", mps,
                        node_edits=node_edits, boot_id=boot_id)
    settings = DriverSettings(driver=driver, node=node, registry_dir=root / "plugins_registry",
                              plugins_dir=root / "plugins", unhealthy=unhealthy, rescan_interval=0)
    mode = ConsumableShares.parse(shares)
    built.append(DraDriver(settings, state, health, publisher, lambda inv: build_devices(inv, {}, mode),
                           backend=backend))
    return built[0]


class RunningDriver:
    """Runs a driver in a thread for a ``with`` block and stops it (SIGTERM's path) on the way out."""

    def __init__(self, driver: DraDriver, inventory: Inventory) -> None:
        self.driver = driver
        self.stop = threading.Event()
        self.thread = threading.Thread(target=driver.run, args=(self.stop, inventory), name="dra-driver",
                                       daemon=True)

    def __enter__(self) -> DraDriver:
        self.thread.start()
        return self.driver

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        if self.thread.is_alive():
            raise RuntimeError("the DRA driver did not stop within 20 s")
