"""Device health as the DRA driver reports it: in the ResourceSlice and on the kubelet's health stream.

The rules are the device plugin's (:mod:`kgpu.deviceplugin.health`: NVIDIA's fatal XIDs, double-bit ECC,
a GPU lost; ``DP_DISABLE_HEALTHCHECKS``/``DP_ENABLE_HEALTHCHECKS``; recovery once a GPU answers again and
stayed quiet for the recovery window). What differs is what an unhealthy device becomes:

* ``remove`` (default): it leaves the ResourceSlice, so the scheduler allocates it to no new claim;
* ``taint``: it stays, with a device taint (beta and on in Kubernetes 1.36) in NVIDIA's keys:
  ``<driver>/xid`` with the XID as value (a double-bit ECC error is XID 48), ``<driver>/gpu-lost``;
  effect ``NoSchedule``, which keeps running pods and lets a claim that tolerates it through.

Either way the kubelet's ``NodeWatchResources`` stream reports the device ``UNHEALTHY`` with the reason,
which Kubernetes shows in the status of the pods using it.

Example::

    health = DeviceHealth(XidPolicy())
    health.handle_event(HealthEvent("GPU-…", HealthEventKind.XID, xid=79))
    health.taints(device, "gpu.nvidia.com")   # [{'key': 'gpu.nvidia.com/xid', 'value': '79', 'effect': 'NoSchedule'}]
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kgpu.deviceplugin.health import HealthChange, HealthTracker, XidPolicy, recover_due
from kgpu.dra.devices import DraDevice
from kgpu.gpu.health import HealthEvent, HealthEventKind

MODES = ("remove", "taint")
DBE_XID = 48
"""The XID a double-bit ECC error raises; its taint value."""


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One device's health as NodeWatchResources reports it."""

    name: str
    healthy: bool
    message: str
    updated: float
    """Unix time of the last change (or of start-up)."""


class DeviceHealth:
    """Health per UUID (from the backend's events), read per DRA device; thread-safe."""

    def __init__(self, policy: XidPolicy | None = None, *, parents: Mapping[str, str] | None = None,
                 recovery_window: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = HealthTracker(policy, parents=parents, recovery_window=recovery_window, clock=clock)
        self._lock = threading.Lock()
        self._causes: dict[str, HealthEvent] = {}
        self._changed: dict[str, float] = {}
        self._started = time.time()
        self._listeners: list[Callable[[HealthChange], None]] = []
        self.tracker.subscribe(self._on_change)

    @property
    def policy(self) -> XidPolicy:
        return self.tracker.policy

    def subscribe(self, listener: Callable[[HealthChange], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[HealthChange], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _on_change(self, change: HealthChange) -> None:
        with self._lock:
            self._changed[change.uuid] = time.time()
            if change.healthy:
                self._causes.pop(change.uuid, None)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(change)

    def handle_event(self, event: HealthEvent) -> list[HealthChange]:
        if self.tracker.policy.is_fatal(event):
            with self._lock:
                self._causes[event.uuid] = event
        return self.tracker.handle_event(event)

    def recover_due(self, probe: Callable[[str], bool]) -> list[HealthChange]:
        return recover_due(self.tracker, probe)

    def state(self, device: DraDevice) -> DeviceState:
        healthy, reason = self.tracker.device_health(device.health_uuids)
        with self._lock:
            updated = max((self._changed.get(u, self._started) for u in device.health_uuids), default=self._started)
        return DeviceState(device.name, healthy, reason if not healthy else "", updated)

    def states(self, devices: Iterable[DraDevice]) -> list[DeviceState]:
        return [self.state(d) for d in devices]

    def taints(self, device: DraDevice, driver: str) -> list[dict[str, Any]]:
        """The device taints an unhealthy ``device`` carries in ``taint`` mode (none when healthy)."""
        healthy, reason = self.tracker.device_health(device.health_uuids)
        if healthy:
            return []
        with self._lock:
            causes = [self._causes[u] for u in device.health_uuids if u in self._causes]
        out: list[dict[str, Any]] = []
        for cause in causes:
            if cause.kind is HealthEventKind.LOST:
                taint = {"key": f"{driver}/gpu-lost", "effect": "NoSchedule"}
            else:
                xid = cause.xid if cause.kind is HealthEventKind.XID and cause.xid is not None else DBE_XID
                taint = {"key": f"{driver}/xid", "value": str(xid), "effect": "NoSchedule"}
            if taint not in out:
                out.append(taint)
        value = re.sub(r"[^A-Za-z0-9_.-]+", "-", reason)[:63].strip("-_.")  # a taint value is a label value
        return out or [{"key": f"{driver}/unhealthy", "value": value, "effect": "NoSchedule"}]
