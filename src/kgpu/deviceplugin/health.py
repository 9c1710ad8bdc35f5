"""Device health as the device plugin reports it: which events are fatal, who says a GPU is sick, recovery.

Two ideas:

* :class:`XidPolicy` decides whether a backend event marks a GPU unhealthy, with NVIDIA's rules and
  environment variables: XIDs 13, 31, 43, 45, 68 and 109 are application faults and leave the GPU
  healthy; ``DP_DISABLE_HEALTHCHECKS`` (``all``, ``xids`` or a comma list of XIDs) ignores more;
  ``DP_ENABLE_HEALTHCHECKS`` (a comma list, or ``all``) makes listed XIDs fatal again, even ones
  disabled above. Double-bit ECC errors and a GPU that fell off the bus are fatal unless health
  checks are disabled entirely. The config file's ``health`` block (NVIDIA's newer format:
  ``disabled``, ``eventTypes``, ``ignoredXIDs``, ``criticalXIDs``) replaces the default ignore list.
* :class:`HealthTracker` holds, per UUID and per *source*, whether that source considers the device
  healthy. A device is healthy when no source objects. The ``gpu`` source is fed from the backend's
  health stream; other components (e.g. MPS daemon supervision) call
  :meth:`HealthTracker.set_source_state` with their own source name. Listeners are called on every
  change, so ListAndWatch streams can push a new list at once.

Recovery, which NVIDIA's plugin lacks: a GPU the ``gpu`` source marked unhealthy becomes healthy
again on a ``recovered`` event, or when :meth:`HealthTracker.recovery_candidates` offers it (no new
fatal event for the recovery window) and a probe of the GPU succeeds.

Example::

    tracker = HealthTracker(XidPolicy.from_environ(os.environ), parents={"MIG-…": "GPU-…"})
    tracker.handle_event(HealthEvent("GPU-…", HealthEventKind.XID, xid=79))
    tracker.device_health(("GPU-…",))          # (False, 'XID 79')
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from kgpu.errors import ConfigError
from kgpu.gpu.health import HealthEvent, HealthEventKind

APPLICATION_XIDS: tuple[int, ...] = (13, 31, 43, 45, 68, 109)
"""XIDs caused by the application, not the GPU (NVIDIA's plugin ignores the same list)."""
ENV_DISABLE = "DP_DISABLE_HEALTHCHECKS"
ENV_ENABLE = "DP_ENABLE_HEALTHCHECKS"
EVENT_XID = "EventTypeXidCriticalError"
EVENT_DBE = "EventTypeDoubleBitEccError"
GPU_SOURCE = "gpu"
"""The source name for the backend's health stream (XID, ECC, lost, recovered)."""

HealthListener = Callable[["HealthChange"], None]


class HealthSettings(Protocol):
    """The ``health`` block of NVIDIA's config file (``kgpu.config.Health`` has this shape)."""

    @property
    def disabled(self) -> bool: ...

    @property
    def event_types(self) -> tuple[str, ...]:
        """NVML event types to watch: EventTypeXidCriticalError, EventTypeDoubleBitEccError, ...; empty = all."""
        ...

    @property
    def ignored_xids(self) -> tuple[int, ...]: ...

    @property
    def critical_xids(self) -> Literal["all"] | tuple[int, ...] | None: ...


def _parse_xids(environ: Mapping[str, str], name: str) -> tuple[bool, frozenset[int]]:
    """``(all, xids)`` from a comma list; 'all' or 'xids' anywhere means all, as in NVIDIA's plugin."""
    xids: set[int] = set()
    for item in environ.get(name, "").lower().split(","):
        item = item.strip()
        if item in ("all", "xids"):
            return True, frozenset()
        if not item:
            continue
        if not item.isdigit():
            raise ConfigError(
                f"environment variable {name}={environ[name]!r}: {item!r} is not an XID; "
                f"allowed: 'all', 'xids', or a comma-separated list of XID numbers such as '48,79'"
            )
        xids.add(int(item))
    return False, frozenset(xids)


@dataclass(frozen=True, slots=True)
class XidPolicy:
    """Which health events are fatal. The default policy ignores only the application XIDs."""

    disabled_all: bool = False
    """Health checks off (``DP_DISABLE_HEALTHCHECKS=all`` or ``health.disabled``)."""
    enabled_all: bool = False
    """``DP_ENABLE_HEALTHCHECKS=all``: every XID is fatal, application ones included."""
    ignored: frozenset[int] = frozenset(APPLICATION_XIDS)
    enabled: frozenset[int] = frozenset()
    """XIDs made fatal by ``DP_ENABLE_HEALTHCHECKS``, whatever else says."""
    critical: frozenset[int] | None = None
    """Only these XIDs are fatal (``health.criticalXIDs`` as a list); None means every XID not ignored."""
    xid_events: bool = True
    ecc_events: bool = True
    """Whether double-bit ECC errors count (``health.eventTypes``)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], health: HealthSettings | None = None) -> XidPolicy:
        """NVIDIA's rules: the config file's ``health`` block, then ``DP_DISABLE_HEALTHCHECKS`` and
        ``DP_ENABLE_HEALTHCHECKS`` on top. ConfigError on a malformed variable."""
        disabled_all, disabled = _parse_xids(environ, ENV_DISABLE)
        enabled_all, enabled = _parse_xids(environ, ENV_ENABLE)
        if health is None:
            return cls(
                disabled_all=disabled_all,
                enabled_all=enabled_all,
                ignored=disabled | frozenset(APPLICATION_XIDS),
                enabled=enabled,
            )
        types = set(health.event_types) or {EVENT_XID, EVENT_DBE}
        critical_xids = health.critical_xids
        critical = None if critical_xids is None or critical_xids == "all" else frozenset(critical_xids)
        return cls(
            disabled_all=disabled_all or health.disabled,
            enabled_all=enabled_all,
            ignored=disabled | frozenset(health.ignored_xids),
            enabled=enabled,
            critical=critical,
            xid_events=EVENT_XID in types,
            ecc_events=EVENT_DBE in types,
        )

    @property
    def monitoring(self) -> bool:
        """False when health checks are off entirely (the backend stream need not be read)."""
        return not self.disabled_all or self.enabled_all or bool(self.enabled)

    def xid_is_fatal(self, xid: int) -> bool:
        if self.enabled_all or xid in self.enabled:
            return True
        if self.disabled_all or not self.xid_events or xid in self.ignored:
            return False
        return self.critical is None or xid in self.critical

    def is_fatal(self, event: HealthEvent) -> bool:
        """Whether ``event`` marks its device unhealthy (``recovered`` never does)."""
        match event.kind:
            case HealthEventKind.XID:
                return event.xid is not None and self.xid_is_fatal(event.xid)
            case HealthEventKind.ECC:
                return self.ecc_events and (not self.disabled_all or self.enabled_all)
            case HealthEventKind.LOST:
                return not self.disabled_all or self.enabled_all
        return False

    def describe(self) -> str:
        if not self.monitoring:
            return "health checks disabled"
        if self.enabled_all:
            return "every XID is fatal"
        if self.disabled_all:
            return "all XIDs ignored except " + ",".join(map(str, sorted(self.enabled)))
        text = "ignoring XIDs " + ",".join(map(str, sorted(self.ignored - self.enabled)))
        if self.critical is not None:
            text += "; fatal XIDs only " + ",".join(map(str, sorted(self.critical | self.enabled)))
        if not self.ecc_events:
            text += "; ECC errors ignored"
        return text


@dataclass(frozen=True, slots=True)
class HealthChange:
    """One device (UUID) changing health in the eyes of one source."""

    uuid: str
    source: str
    healthy: bool
    reason: str
    """Why it changed, e.g. ``XID 79``, ``double-bit ECC error``, ``probe succeeded``."""


@dataclass(slots=True)
class _Verdict:
    reason: str
    since: float
    """Monotonic time of the latest fatal event (refreshed by each new one)."""


class HealthTracker:
    """Thread-safe health of UUIDs, per source; see the module docstring."""

    def __init__(
        self,
        policy: XidPolicy | None = None,
        *,
        parents: Mapping[str, str] | None = None,
        recovery_window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or XidPolicy()
        self.recovery_window = recovery_window
        self._parents = dict(parents or {})
        self._children: dict[str, list[str]] = {}
        for child, parent in self._parents.items():
            self._children.setdefault(parent, []).append(child)
        self._clock = clock
        self._lock = threading.Lock()
        self._verdicts: dict[str, dict[str, _Verdict]] = {}
        """uuid → source → why that source considers it unhealthy."""
        self._verdict_count = 0
        self._listeners: list[HealthListener] = []
        self.version = 0
        """Incremented on every change; cheap to compare for 'anything new?'."""

    # -- listening ---------------------------------------------------------------------------

    def subscribe(self, listener: HealthListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: HealthListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, changes: Iterable[HealthChange]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for change in changes:
            for listener in listeners:
                listener(change)

    # -- changing ----------------------------------------------------------------------------

    def set_source_state(self, source: str, uuid: str, healthy: bool, reason: str = "") -> bool:
        """Record ``source``'s opinion of ``uuid``; returns True when that opinion changed."""
        with self._lock:
            change = self._set(source, uuid, healthy, reason)
        if change is not None:
            self._notify([change])
        return change is not None

    def _set(self, source: str, uuid: str, healthy: bool, reason: str) -> HealthChange | None:
        by_source = self._verdicts.setdefault(uuid, {})
        if healthy:
            if by_source.pop(source, None) is None:
                return None
            self._verdict_count -= 1
        else:
            existing = by_source.get(source)
            if existing is not None:
                existing.since = self._clock()  # a new fatal event restarts the recovery window
                return None
            by_source[source] = _Verdict(reason=reason or "unhealthy", since=self._clock())
            self._verdict_count += 1
        self.version += 1
        return HealthChange(uuid=uuid, source=source, healthy=healthy, reason=reason)

    def handle_event(self, event: HealthEvent) -> list[HealthChange]:
        """Apply one backend event under the policy; returns the changes it caused."""
        changes: list[HealthChange] = []
        with self._lock:
            if event.kind is HealthEventKind.RECOVERED:
                reason = event.detail or "recovered"
                for uuid in (event.uuid, *self._children.get(event.uuid, ())):
                    change = self._set(GPU_SOURCE, uuid, True, reason)
                    if change is not None:
                        changes.append(change)
            elif self.policy.is_fatal(event):
                change = self._set(GPU_SOURCE, event.uuid, False, _describe(event))
                if change is not None:
                    changes.append(change)
        self._notify(changes)
        return changes

    # -- reading -----------------------------------------------------------------------------

    @property
    def all_healthy(self) -> bool:
        """No source considers any device unhealthy (the common case; lets a request skip per-device checks)."""
        return self._verdict_count == 0

    def unhealthy(self) -> dict[str, str]:
        """UUID → reason(s), for every UUID some source considers unhealthy."""
        with self._lock:
            return {
                uuid: "; ".join(f"{v.reason} ({s})" if s != GPU_SOURCE else v.reason for s, v in by.items())
                for uuid, by in self._verdicts.items()
                if by
            }

    def device_health(self, health_uuids: Iterable[str]) -> tuple[bool, str]:
        """Health of a device that depends on ``health_uuids`` (a GPU; a MIG device and its parent)."""
        reasons = []
        with self._lock:
            for uuid in health_uuids:
                for source, verdict in self._verdicts.get(uuid, {}).items():
                    where = f"{uuid}: {verdict.reason}"
                    reasons.append(where if source == GPU_SOURCE else f"{where} ({source})")
        return (not reasons, "; ".join(reasons))

    def recovery_candidates(self) -> list[str]:
        """UUIDs the ``gpu`` source marked unhealthy whose last fatal event is older than the window."""
        now = self._clock()
        with self._lock:
            return [
                uuid
                for uuid, by in self._verdicts.items()
                if GPU_SOURCE in by and now - by[GPU_SOURCE].since >= self.recovery_window
            ]

    def probe_target(self, uuid: str) -> str:
        """The UUID to probe for ``uuid``: a MIG device is probed through its parent GPU."""
        return self._parents.get(uuid, uuid)

    def recover(self, uuid: str, reason: str) -> list[HealthChange]:
        """Clear the ``gpu`` source's verdict on ``uuid`` if it is still due (no newer fatal event)."""
        now = self._clock()
        with self._lock:
            verdict = self._verdicts.get(uuid, {}).get(GPU_SOURCE)
            if verdict is None or now - verdict.since < self.recovery_window:
                return []
            change = self._set(GPU_SOURCE, uuid, True, reason)
        changes = [change] if change is not None else []
        self._notify(changes)
        return changes


def _describe(event: HealthEvent) -> str:
    match event.kind:
        case HealthEventKind.XID:
            text = f"XID {event.xid}"
        case HealthEventKind.ECC:
            text = "double-bit ECC error"
        case HealthEventKind.LOST:
            text = "GPU lost (fell off the bus or NVML stopped answering)"
        case _:
            text = str(event.kind)
    return f"{text}: {event.detail}" if event.detail and event.kind is not HealthEventKind.LOST else text


def recover_due(tracker: HealthTracker, probe: Callable[[str], bool]) -> list[HealthChange]:
    """One recovery pass: probe every candidate's GPU and recover those that answer."""
    changes: list[HealthChange] = []
    for uuid in tracker.recovery_candidates():
        target = tracker.probe_target(uuid)
        if probe(target):
            window = tracker.recovery_window
            changes += tracker.recover(uuid, f"GPU answers and no fatal event for {window:g}s")
    return changes


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str, where: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h30m`` or ``250ms``; ConfigError naming ``where`` otherwise."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ConfigError(
            f"{where}={text!r} is not a duration; use seconds or a number with a unit: 90, 90s, 5m, 1h30m, 250ms"
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
