"""The device-plugin daemon: serve every resource, stay registered with the kubelet, track health.

:class:`DevicePluginDaemon` owns the loops; the reactions live elsewhere (RPCs in
:mod:`kgpu.deviceplugin.server`, health rules in :mod:`kgpu.deviceplugin.health`):

* **registration**: every ~100 ms the daemon looks at ``<kubelet-dir>/kubelet.sock`` and at its own
  sockets. When the kubelet's socket appears or is replaced (a kubelet restart wipes the directory and
  recreates it), or one of our sockets disappears, the endpoint is restarted and registered again.
  A kubelet that is not up yet is simply waited for; a refused registration is retried with backoff.
* **health**: the backend's health stream feeds the tracker; a recovery pass probes GPUs that have been
  quiet for the recovery window. Every change is logged and pushed to ListAndWatch streams at once.
* **state file**: a JSON snapshot rewritten atomically (temp file, fsync, rename) on every change, for
  the exporter and for admins (health and registration changes within ~100 ms; allocation counts
  within half a second, so that a burst of Allocate calls costs one write and wakes nothing). Its shape::

      {
        "version": 1,
        "pid": 4242,
        "updated": "2026-01-01T12:00:00.000Z",
        "kubelet_dir": "/var/lib/kubelet/device-plugins",
        "health_policy": "ignoring XIDs 13,31,43,45,68,109",
        "resources": [
          {
            "name": "nvidia.com/gpu",
            "socket": "nvidia-gpu.sock",
            "registered": true,
            "registrations": 1,
            "devices": [
              {"id": "GPU-…", "gpu_uuid": "GPU-…", "replica": null, "numa_node": 0,
               "health": "Healthy", "reason": "", "allocations": 2}
            ]
          }
        ]
      }

  ``replica`` is the replica number of a shared device (``<id>::<n>``), else null; an MPS slice also
  carries ``"mps": {"memory_mib": 20480, "compute_percent": 25}`` (its client limits); ``health`` is
  ``Healthy`` or ``Unhealthy`` exactly as sent to the kubelet, ``reason`` says why; ``allocations``
  counts the Allocate calls that included the device since the daemon started (the kubelet does not
  report releases, so this is a counter, not a current count); ``registered`` is false while the
  kubelet is away. On a clean stop the file is rewritten with every resource unregistered. The file
  is rewritten at least every 30 s (``updated`` shows the daemon is alive). A daemon that idles
  (failOnInitError false without GPUs, or nothing to advertise) writes ``"resources": []`` and
  ``"idle": "<why>"``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.deviceplugin.api import HEALTHY, KUBELET_SOCKET, UNHEALTHY
from kgpu.deviceplugin.health import HealthChange, HealthTracker, recover_due
from kgpu.deviceplugin.plan import AdvertisedDevice, AdvertisedResource, DevicePluginLogic
from kgpu.deviceplugin.server import PluginEndpoint, RegistrationError, ResourcePlugin, register
from kgpu.gpu.backend import GPUBackend

log = logging.getLogger("kgpu.deviceplugin")

DEFAULT_STATE_FILE = Path("/run/kgpu/device-plugin/state.json")
STATE_VERSION = 1
_STATE_DEBOUNCE_SECONDS = 0.1
_STATE_TICK_SECONDS = 0.5
"""How often the state loop looks for new allocation counts."""
_STATE_HEARTBEAT_SECONDS = 30.0
_WAITING_LOG_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    kubelet_dir: Path = Path("/var/lib/kubelet/device-plugins")
    state_file: Path | None = DEFAULT_STATE_FILE
    poll_interval: float = 0.1
    """How often the kubelet's and our sockets are checked."""
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
    kubelet: tuple[int, int, int] | None = None
    """Identity of the kubelet socket we are registered with; None when not registered."""
    count: int = 0
    next_attempt: float = 0.0
    backoff: float = 0.0
    attempts: int = field(default=0)


def _socket_identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, ctime) of a file; a recreated socket differs even if the inode number is reused."""
    try:
        st = os.stat(path)
    except OSError:  # absent, or its directory is not one (yet)
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class DevicePluginDaemon:
    """Serves ``logic.resources()`` to the kubelet until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        logic: DevicePluginLogic,
        tracker: HealthTracker,
        backend: GPUBackend | None = None,
        settings: DaemonSettings | None = None,
    ) -> None:
        self.logic = logic
        self.tracker = tracker
        self.backend = backend
        self.settings = settings or DaemonSettings()
        self.kubelet_socket = self.settings.kubelet_dir / KUBELET_SOCKET
        self._lock = threading.Lock()
        self._allocations: dict[tuple[str, str], int] = {}
        self._dirty = threading.Event()
        self._allocations_changed = False
        """Set by Allocate (no thread wake-up on the request path); the state loop's next tick writes."""
        self._kubelet: tuple[int, int, int] | None = None
        self._kubelet_seen_at = 0.0
        self._waiting_logged_at = 0.0
        self._state_problem = ""
        # Subscribed before the plugins, so a health change is logged before ListAndWatch reports it.
        self._registrations: list[_Registration] = []
        tracker.subscribe(self._on_health_change)
        self._registrations = [
            _Registration(
                resource=r,
                plugin=(plugin := ResourcePlugin(r, logic, tracker, on_allocate=self._count_allocation)),
                endpoint=PluginEndpoint(plugin, self.settings.kubelet_dir / r.socket_name),
            )
            for r in logic.resources()
        ]

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
            extra={
                "event": "health",
                "uuid": change.uuid,
                "healthy": change.healthy,
                "source": change.source,
                "reason": change.reason,
                "devices": affected,
            },
        )
        self._dirty.set()

    # -- loops -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then stop every endpoint and remove our sockets."""
        names = [r.resource.name for r in self._registrations]
        log.info(
            "device plugin starting",
            extra={
                "event": "start",
                "resources": names,
                "kubelet_dir": str(self.settings.kubelet_dir),
                "health_policy": self.tracker.policy.describe(),
            },
        )
        threads = [threading.Thread(target=self._state_loop, args=(stop,), name="dp-state", daemon=True)]
        if self.backend is not None and self.tracker.policy.monitoring:
            threads.append(threading.Thread(target=self._health_loop, args=(stop,), name="dp-health", daemon=True))
            threads.append(
                threading.Thread(target=self._recovery_loop, args=(stop,), name="dp-recovery", daemon=True)
            )
        for t in threads:
            t.start()
        if _socket_identity(self.kubelet_socket) is None:
            log.info(
                "waiting for the kubelet's socket before serving",
                extra={"event": "kubelet", "socket": str(self.kubelet_socket)},
            )
        self._dirty.set()
        try:
            while not stop.is_set():
                self.reconcile()
                stop.wait(self.settings.poll_interval)
        finally:
            for reg in self._registrations:
                reg.plugin.close()
                reg.endpoint.stop()
                reg.kubelet = None
            for t in threads:
                t.join(timeout=5)
            self.write_state()
            log.info("device plugin stopped", extra={"event": "stop", "resources": names})

    def reconcile(self) -> None:
        """One turn of the registration loop (public so tests can drive it step by step)."""
        kubelet = _socket_identity(self.kubelet_socket)
        now = time.monotonic()
        if kubelet != self._kubelet:
            if kubelet is None:
                log.warning(
                    "kubelet socket is gone; waiting for the kubelet to come back",
                    extra={"event": "kubelet", "socket": str(self.kubelet_socket)},
                )
            else:
                log.info(
                    "kubelet socket appeared" if self._kubelet is None else "kubelet restarted",
                    extra={"event": "kubelet", "socket": str(self.kubelet_socket)},
                )
                self._kubelet_seen_at = now
            self._kubelet = kubelet
            for reg in self._registrations:
                reg.next_attempt, reg.backoff = 0.0, 0.0
                if reg.kubelet is not None:
                    reg.kubelet = None
                    self._dirty.set()
        if kubelet is None:
            if now - self._waiting_logged_at >= _WAITING_LOG_SECONDS:
                if self._waiting_logged_at:
                    log.warning(
                        "still waiting for the kubelet's socket; is --kubelet-dir right?",
                        extra={"event": "kubelet", "socket": str(self.kubelet_socket)},
                    )
                self._waiting_logged_at = now
            return
        self._waiting_logged_at = 0.0
        for reg in self._registrations:
            intact = reg.endpoint.serving and reg.endpoint.socket_intact()
            if reg.kubelet == kubelet and intact:
                continue
            if reg.kubelet is not None and not intact:
                log.warning(
                    "our socket was removed; serving again and re-registering",
                    extra={"event": "socket", "resource": reg.resource.name, "socket": str(reg.endpoint.socket_path)},
                )
                reg.kubelet, reg.next_attempt, reg.backoff = None, 0.0, 0.0
                self._kubelet_seen_at = now
                self._dirty.set()
            if now < reg.next_attempt:
                continue
            self._register(reg, kubelet, intact)

    def _register(self, reg: _Registration, kubelet: tuple[int, int, int], intact: bool) -> None:
        reg.attempts += 1
        try:
            if not intact:
                reg.endpoint.start()
            register(self.kubelet_socket, reg.resource, timeout=self.settings.register_timeout)
        except (RegistrationError, OSError) as exc:
            reg.backoff = min(max(reg.backoff * 2, 0.5), self.settings.retry_max)
            reg.next_attempt = time.monotonic() + reg.backoff
            log.warning(
                "registration with the kubelet failed; will retry",
                extra={
                    "event": "register",
                    "resource": reg.resource.name,
                    "error": str(exc),
                    "retry_in_s": reg.backoff,
                },
            )
            return
        reg.kubelet, reg.backoff, reg.count = kubelet, 0.0, reg.count + 1
        healthy = sum(1 for s in reg.plugin.states() if s.healthy)
        log.info(
            "registered with the kubelet",
            extra={
                "event": "register",
                "resource": reg.resource.name,
                "endpoint": reg.resource.socket_name,
                "devices": len(reg.resource.devices),
                "healthy": healthy,
                "registration": reg.count,
                "latency_ms": round((time.monotonic() - self._kubelet_seen_at) * 1000, 1),
            },
        )
        self._dirty.set()

    def _health_loop(self, stop: threading.Event) -> None:
        assert self.backend is not None
        from kgpu.daemon import Watcher
        from kgpu.gpu.health import POLL_SLICE_SECONDS

        feed = self.backend.health_feed()

        def tick() -> None:
            for event in feed.poll(POLL_SLICE_SECONDS):
                self.tracker.handle_event(event)

        try:
            Watcher("health-events", tick, interval=0.0).run(stop)
        finally:
            feed.close()

    def _recovery_loop(self, stop: threading.Event) -> None:
        assert self.backend is not None
        interval = min(max(self.tracker.recovery_window / 5, 0.05), 5.0)
        while not stop.wait(interval):
            try:
                recover_due(self.tracker, self.backend.probe)
            except Exception as exc:
                log.warning("recovery probe failed", extra={"event": "health", "error": str(exc)})

    def _state_loop(self, stop: threading.Event) -> None:
        last = 0.0
        while not stop.is_set():
            if self._dirty.wait(_STATE_TICK_SECONDS):
                # Coalesce bursts (a GPU taking its replicas down, a kubelet restart) into one write.
                stop.wait(_STATE_DEBOUNCE_SECONDS)
            elif not self._allocations_changed and time.monotonic() - last < _STATE_HEARTBEAT_SECONDS:
                continue
            # Rewritten at least every heartbeat: a fresh "updated" shows the daemon is alive.
            self._dirty.clear()
            self._allocations_changed = False  # before the snapshot: a later Allocate sets it again
            self.write_state()
            last = time.monotonic()

    def write_state(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        try:
            write_state(path, self.state())
        except OSError as exc:
            if str(exc) != self._state_problem:  # once per distinct problem, not on every heartbeat
                log.warning(
                    "cannot write the state file (the exporter's device-plugin series will be missing)",
                    extra={"path": str(path), "error": str(exc)},
                )
            self._state_problem = str(exc)
        else:
            self._state_problem = ""

    # -- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        with self._lock:
            allocations = dict(self._allocations)
        resources = []
        for reg in self._registrations:
            devices = [
                {
                    "id": s.device.id,
                    "gpu_uuid": s.device.gpu_uuid,
                    "replica": s.device.replica,
                    "numa_node": s.device.numa_node,
                    "health": HEALTHY if s.healthy else UNHEALTHY,
                    "reason": s.reason,
                    "allocations": allocations.get((reg.resource.name, s.device.id), 0),
                    **_mps_limits(s.device),
                }
                for s in reg.plugin.states()
            ]
            resources.append(
                {
                    "name": reg.resource.name,
                    "socket": reg.resource.socket_name,
                    "registered": reg.kubelet is not None,
                    "registrations": reg.count,
                    "devices": devices,
                }
            )
        return {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "updated": _timestamp(),
            "kubelet_dir": str(self.settings.kubelet_dir),
            "device_list_strategy": list(self.settings.device_list_strategy),
            "nvidia_driver_root": self.settings.nvidia_driver_root,
            "health_policy": self.tracker.policy.describe(),
            "resources": resources,
        }

    @property
    def registered(self) -> dict[str, bool]:
        return {reg.resource.name: reg.kubelet is not None for reg in self._registrations}


def _mps_limits(device: AdvertisedDevice) -> dict[str, object]:
    """``{"mps": {"memory_mib": …, "compute_percent": …}}`` for an MPS slice, else nothing."""
    if device.mps_memory_mib is None and device.mps_compute_percent is None:
        return {}
    return {"mps": {"memory_mib": device.mps_memory_mib, "compute_percent": device.mps_compute_percent}}


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def idle_state(kubelet_dir: Path, reason: str) -> dict[str, object]:
    """The state of a daemon that serves nothing (failOnInitError false without GPUs, or no devices)."""
    return {
        "version": STATE_VERSION,
        "pid": os.getpid(),
        "updated": _timestamp(),
        "kubelet_dir": str(kubelet_dir),
        "idle": reason,
        "resources": [],
    }


def write_state(path: Path, state: dict[str, object]) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never half of either."""
    from kgpu.fsio import write_atomic

    write_atomic(path, json.dumps(state, indent=2) + "\n")
