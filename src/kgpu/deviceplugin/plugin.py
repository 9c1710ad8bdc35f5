"""The device plugin's reactions: keep every resource served and registered, report health and state.

:class:`DevicePlugin` owns one gRPC endpoint per advertised resource and reacts; the waiting and
retrying belong to the daemon runtime (:mod:`kgpu.deviceplugin.daemon` wires these into watchers):

* :meth:`DevicePlugin.reconcile` (every ~100 ms): when ``<kubelet-dir>/kubelet.sock`` appears or is
  replaced (a kubelet restart wipes the directory and recreates it), or one of our sockets
  disappears, the endpoint is restarted and registered again. A kubelet that is not up yet is waited
  for; a refused registration is retried with backoff.
* :meth:`DevicePlugin.write_state_when_due`: the state file (:mod:`kgpu.deviceplugin.statefile`)
  rewritten within ~100 ms of a health or registration change, within half a second of new
  allocations (a burst of Allocate calls costs one write), and at least every 30 s.
* :meth:`DevicePlugin.replace`: a reloaded configuration. Resources whose devices did not change keep
  their endpoint and registration (they answer Allocate with the new decisions at once); the others
  are stopped (their sockets removed) and the new ones served and registered.
* :meth:`DevicePlugin.close`: every endpoint stopped, our sockets and the state file removed (a clean
  stop leaves nothing on the node).

Example::

    plugin = DevicePlugin(node_resources, tracker, PluginSettings(kubelet_dir=Path("/tmp/dp")))
    plugin.reconcile()                 # registers with a kubelet that is up
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kgpu.daemon import Backoff
from kgpu.deviceplugin.api import HEALTHY, KUBELET_SOCKET, UNHEALTHY
from kgpu.deviceplugin.devices import AdvertisedDevice, AdvertisedResource
from kgpu.deviceplugin.health import HealthChange, HealthTracker
from kgpu.deviceplugin.service import DevicePluginLogic, PluginEndpoint, RegistrationError, ResourcePlugin, register
from kgpu.deviceplugin.statefile import (
    ConfigState,
    DeviceState,
    MpsLimits,
    PluginState,
    ResourceState,
    remove_state,
    timestamp,
    write_state,
)
from kgpu.log import ProblemLog

log = logging.getLogger("kgpu.deviceplugin")

STATE_DEBOUNCE_SECONDS = 0.1
STATE_TICK_SECONDS = 0.5
"""How often the state writer looks for new allocation counts."""
STATE_HEARTBEAT_SECONDS = 30.0
_WAITING_LOG_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PluginSettings:
    kubelet_dir: Path = Path("/var/lib/kubelet/device-plugins")
    state_file: Path | None = None
    register_timeout: float = 5.0
    retry_max: float = 10.0
    """Longest wait between two attempts to register with a kubelet that refuses."""
    device_list_strategy: tuple[str, ...] = ()
    """How allocated devices reach the runtime (recorded in the state file: ``kgpu validate`` judges the
    container runtime by it — ``driver-mounts`` needs no NVIDIA runtime)."""
    nvidia_driver_root: str = "/"
    """The driver root on the host (recorded in the state file beside the strategy)."""


@dataclass(slots=True)
class _Registration:
    resource: AdvertisedResource
    plugin: ResourcePlugin
    endpoint: PluginEndpoint
    backoff: Backoff
    kubelet: tuple[int, int, int] | None = None
    """Identity of the kubelet socket we are registered with; None when not registered."""
    count: int = 0
    next_attempt: float = 0.0


def _socket_identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, ctime) of a file; a recreated socket differs even if the inode number is reused."""
    try:
        st = os.stat(path)
    except OSError:  # absent, or its directory is not one (yet)
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class DevicePlugin:
    """Serves ``logic.resources()`` to the kubelet; see the module docstring."""

    def __init__(
        self,
        logic: DevicePluginLogic,
        tracker: HealthTracker,
        settings: PluginSettings | None = None,
        config: Callable[[], ConfigState] = ConfigState,
    ) -> None:
        self.logic = logic
        self.tracker = tracker
        self.settings = settings or PluginSettings()
        self.config_state = config
        """What the state file says about the config file (the daemon's reload watcher knows)."""
        self.kubelet_socket = self.settings.kubelet_dir / KUBELET_SOCKET
        self._lock = threading.Lock()
        self._closed = False
        self._allocations: dict[tuple[str, str], int] = {}
        self._dirty = threading.Event()
        self._allocations_changed = False
        """Set by Allocate (no thread wake-up on the request path); the state writer's next tick writes."""
        self._kubelet: tuple[int, int, int] | None = None
        self._kubelet_seen_at = 0.0
        self._waiting_logged_at = 0.0
        self._last_write = 0.0
        self._problems = ProblemLog(log)
        tracker.subscribe(self._on_health_change)  # before the endpoints: a change is logged before it is sent
        self._registrations = [self._registration(r, logic) for r in logic.resources()]

    def _registration(self, resource: AdvertisedResource, logic: DevicePluginLogic) -> _Registration:
        plugin = ResourcePlugin(resource, logic, self.tracker, on_allocate=self._count_allocation)
        return _Registration(
            resource=resource, plugin=plugin,
            endpoint=PluginEndpoint(plugin, self.settings.kubelet_dir / resource.socket_name),
            backoff=Backoff(initial=0.5, cap=self.settings.retry_max),
        )

    @property
    def resources(self) -> tuple[AdvertisedResource, ...]:
        return tuple(r.resource for r in self._registrations)

    # -- reactions ---------------------------------------------------------------------------

    def _count_allocation(self, resource: str, ids: Sequence[str]) -> None:
        with self._lock:
            for i in ids:
                self._allocations[(resource, i)] = self._allocations.get((resource, i), 0) + 1
        self._allocations_changed = True

    def _on_health_change(self, change: HealthChange) -> None:
        affected = [
            f"{reg.resource.name}={d.id}"
            for reg in self._registrations
            for d in reg.resource.devices
            if change.uuid in d.health_uuids
        ]
        log.log(
            logging.INFO if change.healthy else logging.WARNING,
            "device healthy again" if change.healthy else "device unhealthy",
            extra={"event": "health", "uuid": change.uuid, "healthy": change.healthy, "source": change.source,
                   "reason": change.reason, "devices": affected},
        )
        self._dirty.set()

    def reconcile(self) -> None:
        """One turn of the registration loop: follow the kubelet's socket, keep ours served and registered."""
        kubelet = _socket_identity(self.kubelet_socket)
        now = time.monotonic()
        if kubelet != self._kubelet:
            if kubelet is None:
                log.warning("kubelet socket is gone; waiting for the kubelet to come back",
                            extra={"event": "kubelet", "socket": str(self.kubelet_socket)})
            else:
                log.info("kubelet socket appeared" if self._kubelet is None else "kubelet restarted",
                         extra={"event": "kubelet", "socket": str(self.kubelet_socket)})
                self._kubelet_seen_at = now
            self._kubelet = kubelet
            for reg in self._registrations:
                reg.next_attempt = 0.0
                reg.backoff.reset()
                if reg.kubelet is not None:
                    reg.kubelet = None
                    self._dirty.set()
        if kubelet is None:
            if now - self._waiting_logged_at >= _WAITING_LOG_SECONDS:
                if self._waiting_logged_at:
                    log.warning("still waiting for the kubelet's socket; is --kubelet-dir right?",
                                extra={"event": "kubelet", "socket": str(self.kubelet_socket)})
                self._waiting_logged_at = now
            return
        self._waiting_logged_at = 0.0
        for reg in list(self._registrations):
            intact = reg.endpoint.serving and reg.endpoint.socket_intact()
            if reg.kubelet == kubelet and intact:
                continue
            if reg.kubelet is not None and not intact:
                log.warning("our socket was removed; serving again and re-registering",
                            extra={"event": "socket", "resource": reg.resource.name,
                                   "socket": str(reg.endpoint.socket_path)})
                reg.kubelet, reg.next_attempt = None, 0.0
                self._kubelet_seen_at = now
                self._dirty.set()
            if now >= reg.next_attempt:
                self._register(reg, kubelet, intact)

    def _register(self, reg: _Registration, kubelet: tuple[int, int, int], intact: bool) -> None:
        try:
            with self._lock:
                if self._closed or reg not in self._registrations:
                    return
                if not intact:
                    reg.endpoint.start()
            # Outside the lock: a kubelet that does not answer must not keep close() waiting.
            register(self.kubelet_socket, reg.resource, timeout=self.settings.register_timeout)
        except (RegistrationError, OSError) as exc:
            delay = reg.backoff.failed()
            reg.next_attempt = time.monotonic() + delay
            self._problems.report(
                f"register {reg.resource.name}: {exc}", "registration with the kubelet failed; will retry",
                event="register", resource=reg.resource.name, error=str(exc), retry_in_s=delay,
            )
            return
        reg.kubelet, reg.count = kubelet, reg.count + 1
        reg.backoff.reset()
        self._problems.forget(f"register {reg.resource.name}")
        healthy = sum(1 for s in reg.plugin.states() if s.healthy)
        log.info("registered with the kubelet", extra={
            "event": "register", "resource": reg.resource.name, "endpoint": reg.resource.socket_name,
            "devices": len(reg.resource.devices), "healthy": healthy, "registration": reg.count,
            "latency_ms": round((time.monotonic() - self._kubelet_seen_at) * 1000, 1),
        })
        self._dirty.set()

    def replace(self, logic: DevicePluginLogic) -> None:
        """Serve ``logic`` (a reloaded configuration) instead; see the module docstring."""
        new = {r.name: r for r in logic.resources()}
        with self._lock:
            if self._closed:
                return
            kept, gone = [], []
            for reg in self._registrations:
                if new.get(reg.resource.name) == reg.resource:
                    reg.plugin.logic = logic
                    kept.append(reg)
                else:
                    gone.append(reg)
            for reg in gone:
                reg.plugin.close()
                reg.endpoint.stop()
            have = {reg.resource.name for reg in kept}
            added = [self._registration(r, logic) for name, r in new.items() if name not in have]
            self._registrations = sorted(kept + added, key=lambda reg: reg.resource.name)
            self.logic = logic
        log.info("serving the reloaded configuration", extra={
            "event": "reload", "kept": sorted(have), "stopped": sorted(r.resource.name for r in gone),
            "started": sorted(r.resource.name for r in added),
        })
        self._kubelet_seen_at = time.monotonic()
        self._dirty.set()

    def close(self) -> None:
        """Stop every endpoint, removing our sockets and the state file."""
        with self._lock:
            self._closed = True
            registrations = list(self._registrations)
        for reg in registrations:
            reg.plugin.close()
            reg.endpoint.stop()
            reg.kubelet = None
        self.tracker.unsubscribe(self._on_health_change)
        remove_state(self.settings.state_file)
        log.info("device plugin stopped",
                 extra={"event": "stop", "resources": [r.resource.name for r in registrations]})

    # -- the state file ----------------------------------------------------------------------

    def state_changed(self) -> None:
        """Something the state file shows changed (e.g. a config reload was refused): write it soon."""
        self._dirty.set()

    def write_state_when_due(self) -> None:
        """A watcher's tick: wait up to half a second for a change, then write the state if due."""
        if self._dirty.wait(STATE_TICK_SECONDS):
            time.sleep(STATE_DEBOUNCE_SECONDS)  # coalesce bursts (a GPU taking its replicas down) into one write
        elif not self._allocations_changed and time.monotonic() - self._last_write < STATE_HEARTBEAT_SECONDS:
            return
        self._dirty.clear()
        self._allocations_changed = False  # before the snapshot: a later Allocate sets it again
        self.write_state()

    def write_state(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        write_state(path, self.state())  # a failure is the watcher's to report and retry
        self._last_write = time.monotonic()

    def state(self) -> PluginState:
        with self._lock:
            allocations = dict(self._allocations)
            registrations = list(self._registrations)
        resources = []
        for reg in registrations:
            devices = tuple(
                DeviceState(
                    id=s.device.id, gpu_uuid=s.device.gpu_uuid, health=HEALTHY if s.healthy else UNHEALTHY,
                    reason=s.reason, replica=s.device.replica, numa_node=s.device.numa_node,
                    allocations=allocations.get((reg.resource.name, s.device.id), 0), mps=_mps_limits(s.device),
                )
                for s in reg.plugin.states()
            )
            resources.append(ResourceState(
                name=reg.resource.name, socket=reg.resource.socket_name, registered=reg.kubelet is not None,
                registrations=reg.count, devices=devices,
            ))
        return PluginState(
            resources=tuple(resources), kubelet_dir=str(self.settings.kubelet_dir),
            health_policy=self.tracker.policy.describe(), config=self.config_state(),
            device_list_strategy=self.settings.device_list_strategy,
            nvidia_driver_root=self.settings.nvidia_driver_root, pid=os.getpid(), updated=timestamp(),
        )

    @property
    def registered(self) -> dict[str, bool]:
        return {reg.resource.name: reg.kubelet is not None for reg in self._registrations}


def _mps_limits(device: AdvertisedDevice) -> MpsLimits | None:
    if device.mps_memory_mib is None and device.mps_compute_percent is None:
        return None
    return MpsLimits(device.mps_memory_mib, device.mps_compute_percent)


def idle_state(kubelet_dir: Path, reason: str, config: ConfigState | None = None) -> PluginState:
    """The state of a plugin that serves nothing (failOnInitError false without GPUs, or no devices)."""
    return PluginState(kubelet_dir=str(kubelet_dir), idle=reason, config=config or ConfigState(), pid=os.getpid(),
                       updated=timestamp())



