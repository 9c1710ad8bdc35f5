"""The DRA kubelet plugin daemon: serve the kubelet, publish the node's slices, follow GPU health.

:class:`DraDriver` runs its steps as supervised watchers of :class:`kgpu.daemon.Daemon`; the decisions
live elsewhere (RPCs in :mod:`kgpu.dra.service`, prepare in :mod:`kgpu.dra.state`, slices in
:mod:`kgpu.dra.slices`, health in :mod:`kgpu.dra.health`):

* **sockets**: the DRA service on ``<plugins-dir>/<driver>/dra.sock``, then registration on
  ``<registry-dir>/<driver>-reg.sock`` (the kubelet's plugin watcher finds it and calls GetInfo). Either
  socket removed or replaced is served again within half a second; SIGTERM removes the registration
  socket first, so the kubelet stops calling before the service goes;
* **slices**: published at start and after every change (health, a rescan that finds another MIG
  layout), coalesced over 100 ms; failures retried with backoff (0.5 s doubling to 30 s) and logged
  once per cause; every 5 s the published slices are compared with the API's and published again
  when they went missing (the kubelet deletes a node's slices when it starts);
* **health**: the backend's event stream feeds :class:`~kgpu.dra.health.DeviceHealth`; a recovery pass
  probes quiet GPUs; each change reaches the slices and the NodeWatchResources streams at once;
* **MPS**: every 2 s the daemons of prepared MPS claims are checked and restarted if they died;
* **rescan**: every ``rescan_interval`` the inventory is read afresh (a MIG layout may have changed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from kgpu.daemon import Daemon
from kgpu.dra.api import dra_pb2_grpc, drahealth_pb2_grpc, pluginregistration_pb2_grpc
from kgpu.dra.devices import DraDevice
from kgpu.dra.health import DeviceHealth
from kgpu.dra.service import DraPlugin, HealthBroadcast, Registration, ResourceHealth
from kgpu.dra.slices import build_slices
from kgpu.dra.state import DriverState
from kgpu.gpu.backend import GPUBackend
from kgpu.gpu.health import POLL_SLICE_SECONDS, HealthFeed
from kgpu.gpu.model import Inventory

log = logging.getLogger("kgpu.dra")

_SOCKET_CHECK_SECONDS = 0.5
_PUBLISH_DEBOUNCE_SECONDS = 0.1
_WAIT_SLICE_SECONDS = 0.5


class Publisher(Protocol):
    """What the driver needs of the API: :class:`kgpu.dra.kube.SlicePublisher`, or a stand-in."""

    def owner(self) -> dict[str, str]: ...

    def existing(self) -> dict[str, int]: ...

    def apply(self, slices: Sequence[Mapping[str, Any]]) -> None: ...


@dataclass(frozen=True, slots=True)
class DriverSettings:
    driver: str
    node: str
    registry_dir: Path
    plugins_dir: Path
    unhealthy: str = "remove"
    rescan_interval: float = 60.0
    """Seconds between inventory rescans (a MIG layout change); 0 never rescans."""
    resync_interval: float = 5.0
    """Seconds between comparisons of the published slices with the API's."""
    mps_check_interval: float = 2.0

    @property
    def plugin_dir(self) -> Path:
        return self.plugins_dir / self.driver

    @property
    def dra_socket(self) -> Path:
        return self.plugin_dir / "dra.sock"

    @property
    def registration_socket(self) -> Path:
        return self.registry_dir / f"{self.driver}-reg.sock"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class _Endpoint:
    """One gRPC server on one unix socket, restartable."""

    def __init__(self, path: Path, add: Callable[[Any], None], name: str) -> None:
        self.path = path
        self.add = add
        self.name = name
        self._server: Any = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        self.stop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"dra-{self.name}"))
        self.add(server)
        if server.add_insecure_port(f"unix://{self.path}") == 0:
            raise OSError(f"cannot listen on unix socket {self.path}")
        server.start()
        self._identity = _identity(self.path)
        self._server = server

    @property
    def serving(self) -> bool:
        return self._server is not None

    def intact(self) -> bool:
        return self._server is not None and _identity(self.path) == self._identity

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if _identity(self.path) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # first: a kubelet watching the directory sees the plugin go at once
        server.stop(1.0).wait()
        self._identity = None


class DraDriver:
    """Serves until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        settings: DriverSettings,
        state: DriverState,
        health: DeviceHealth,
        publisher: Publisher | None,
        build: Callable[[Inventory], tuple[DraDevice, ...]],
        backend: GPUBackend | None = None,
        rescan: Callable[[], Inventory] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.health = health
        self.publisher = publisher
        self.build = build
        self.backend = backend
        self.rescan = rescan
        self._lock = threading.Lock()
        self._devices: tuple[DraDevice, ...] = ()
        self._dirty = threading.Event()
        self._published: dict[str, int] = {}
        self._generation = 0
        self._next_resync = 0.0
        self.publish_count = 0
        self.registered: bool | None = None
        """What the kubelet last said in NotifyRegistrationStatus (None: not yet)."""
        self.broadcast = HealthBroadcast(self.device_states, settings.node)
        self._stop = threading.Event()
        self._dra = _Endpoint(settings.dra_socket, self._add_dra, "plugin")
        self._registration = _Endpoint(settings.registration_socket, self._add_registration, "registration")
        health.subscribe(self._on_health)

    # -- devices -----------------------------------------------------------------------------

    @property
    def devices(self) -> tuple[DraDevice, ...]:
        with self._lock:
            return self._devices

    def devices_by_name(self) -> dict[str, DraDevice]:
        return {d.name: d for d in self.devices}

    def set_inventory(self, inventory: Inventory) -> bool:
        """Adopt the devices of ``inventory``; True when they differ from the ones published."""
        devices = self.build(inventory)
        with self._lock:
            if devices == self._devices:
                return False
            before = {d.name for d in self._devices}
            self._devices = devices
        if before:
            log.info("devices changed", extra={"event": "rescan", "devices": [d.name for d in devices],
                                               "before": sorted(before)})
        self._dirty.set()
        self.broadcast.changed()
        return True

    def device_states(self) -> list[Any]:
        return self.health.states(self.devices)

    def slices(self, generation: int) -> list[dict[str, Any]]:
        unhealthy = {d.name: self.health.taints(d, self.settings.driver) for d in self.devices
                     if not self.health.state(d).healthy}
        owner = self.publisher.owner() if self.publisher is not None else None
        return build_slices(self.settings.node, self.settings.driver, self.devices, unhealthy,
                            generation=generation, mode=self.settings.unhealthy, owner=owner)

    # -- reactions ---------------------------------------------------------------------------

    def _on_health(self, change: Any) -> None:
        affected = [d.name for d in self.devices if change.uuid in d.health_uuids]
        log.log(logging.INFO if change.healthy else logging.WARNING,
                "device healthy again" if change.healthy else "device unhealthy",
                extra={"event": "health", "uuid": change.uuid, "healthy": change.healthy, "reason": change.reason,
                       "devices": affected})
        self._dirty.set()
        self.broadcast.changed()

    def _on_registration(self, registered: bool, error: str) -> None:
        self.registered = registered

    def _add_dra(self, server: Any) -> None:
        dra_pb2_grpc.add_DRAPluginServicer_to_server(DraPlugin(self.state), server)
        drahealth_pb2_grpc.add_DRAResourceHealthServicer_to_server(ResourceHealth(self.broadcast, self._stop), server)

    def _add_registration(self, server: Any) -> None:
        registration = Registration(self.settings.driver, str(self.settings.dra_socket), self._on_registration)
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(registration, server)

    # -- watchers ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, inventory: Inventory, healthz: tuple[str, int] | None = None) -> None:
        """Serve until ``stop`` is set, then stop serving and remove our sockets (slices stay for the kubelet
        to clean up 30 s later, so a restart in between does not make the scheduler see an empty node).

        Each loop is a supervised watcher of the daemon runtime (:mod:`kgpu.daemon`): a failing step is
        logged once per cause and retried with backoff; ``healthz`` serves ``/healthz`` from their state.
        """
        self._stop = stop
        self.set_inventory(inventory)
        self.state.start()
        log.info("DRA driver starting", extra={
            "event": "start", "driver": self.settings.driver, "node": self.settings.node,
            "devices": [d.name for d in self.devices], "registration": str(self.settings.registration_socket),
            "endpoint": str(self.settings.dra_socket), "health_policy": self.health.policy.describe(),
        })
        with Daemon("dra-plugin", stop=stop) as daemon:
            daemon.on_stop(self._stop_serving)
            daemon.watch("sockets", self.check_sockets, interval=_SOCKET_CHECK_SECONDS)
            daemon.watch("publish", self.publish_step, interval=0.0)
            daemon.watch("mps", self.state.mps.check, interval=self.settings.mps_check_interval)
            if self.backend is not None and self.health.policy.monitoring:
                feed = self.backend.health_feed()
                daemon.on_stop(feed.close)
                daemon.watch("health-events", lambda: self._feed_step(feed), interval=0.0)
                recovery = min(max(self.health.tracker.recovery_window / 5, 0.05), 5.0)
                backend = self.backend
                daemon.watch("recovery", lambda: self._recover(backend), interval=recovery)
            if self.rescan is not None and self.settings.rescan_interval > 0:
                rescan = self.rescan
                daemon.watch("rescan", lambda: self._rescan(rescan), interval=self.settings.rescan_interval)
            if healthz is not None:
                daemon.serve_http(healthz)
            daemon.serve()
        log.info("DRA driver stopped", extra={"event": "stop", "driver": self.settings.driver})

    def _stop_serving(self) -> None:
        self._registration.stop()  # first: the kubelet stops calling before the service goes
        self._dra.stop()
        with contextlib.suppress(OSError):
            self.settings.plugin_dir.rmdir()  # only when empty: the checkpoint lives there too
        self.broadcast.changed()  # health streams see the stop at once

    def check_sockets(self) -> None:
        """Serve again on a socket that was removed or replaced (DRA first: registration points at it)."""
        for endpoint in (self._dra, self._registration):
            if endpoint.intact():
                continue
            if endpoint.serving:
                log.warning("our socket was removed; serving on it again",
                            extra={"event": "socket", "socket": str(endpoint.path)})
            endpoint.start()  # an OSError is the watcher's to log and retry

    def publish(self) -> None:
        """Publish the slices now (generation one past the highest seen); raises the publisher's error."""
        if self.publisher is None:
            return
        if not self._generation:
            self._generation = max(self.publisher.existing().values(), default=0)
        slices = self.slices(self._generation + 1)
        self.publisher.apply(slices)
        self._generation += 1
        self._published = {s["metadata"]["name"]: self._generation for s in slices}
        self.publish_count += 1
        log.info("ResourceSlices published", extra={
            "event": "publish", "slices": sorted(self._published), "generation": self._generation,
            "devices": [d["name"] for s in slices for d in s["spec"]["devices"]],
        })

    def publish_step(self) -> None:
        """Publish when something changed (a burst coalesced over 100 ms), and every resync interval compare
        the published slices with the API's: a starting kubelet deletes its node's slices."""
        if self._dirty.wait(_WAIT_SLICE_SECONDS):
            self._stop.wait(_PUBLISH_DEBOUNCE_SECONDS)
        elif self.publisher is not None and time.monotonic() >= self._next_resync:
            self._next_resync = time.monotonic() + self.settings.resync_interval
            if self.publisher.existing() != self._published:
                log.warning("our ResourceSlices changed or went missing; publishing them again",
                            extra={"event": "publish"})
                self._generation = 0
                self._dirty.set()
        if self._stop.is_set() or not self._dirty.is_set():
            return
        self._dirty.clear()
        try:
            self.publish()
        except BaseException:
            self._dirty.set()  # the watcher retries with backoff, and this step publishes again
            raise

    def _feed_step(self, feed: HealthFeed) -> None:
        for event in feed.poll(POLL_SLICE_SECONDS):
            self.health.handle_event(event)

    def _recover(self, backend: GPUBackend) -> None:
        self.health.recover_due(backend.probe)

    def _rescan(self, rescan: Callable[[], Inventory]) -> None:
        self.set_inventory(rescan())
