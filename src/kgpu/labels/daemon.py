"""The labeler's reaction: compute labels, publish them, again every interval and at once on change.

The daemon runtime (:mod:`kgpu.daemon`) owns the waiting, retrying and stopping; :class:`Labeler`
supplies one step, :meth:`Labeler.tick`, over two plain functions: ``compute()`` returns the labels
without the timestamp (it re-reads the inventory, config file and host facts), ``publish(labels)``
writes them somewhere. A tick publishes when the labels differ from the last ones published, or
when ``interval`` has passed since the last publish (re-asserting labels someone removed). A tick
that fails is retried by the runtime with backoff (``poll`` doubling up to ``interval``).

A config file that became invalid is not a failure of the labeler: the labels computed from the
last valid configuration stay published, the refusal is logged once and shown on ``/healthz``.

``nvidia.com/gfd.timestamp``: GFD stamps the time its labelling run started (process start or
config reload), not every rewrite; kgpu stamps the time the current label set was first
computed, so it moves when the labels change and not on every interval.

Example::

    labeler = Labeler(compute, publish, LoopTiming(interval=60, poll=5))
    daemon.watch("labels", labeler.tick, interval=5, backoff=labeler.backoff())
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kgpu.daemon import Backoff, Watcher
from kgpu.errors import ConfigError, KgpuError
from kgpu.labels.gfd import TIMESTAMP, Labels
from kgpu.log import cut

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoopTiming:
    interval: float = 60.0
    """Seconds between publishes when nothing changes (GFD's ``--sleep-interval``)."""
    poll: float = 5.0
    """Seconds between checks for changed inventory, config or host facts."""
    with_timestamp: bool = True

    @property
    def unhealthy_after(self) -> float:
        """Failing for this long makes the labeler unhealthy (two publishes missed)."""
        return 2 * self.interval + self.poll


@dataclass(slots=True)
class LabelerState:
    """What the labeler knows."""

    published: Labels | None = None
    last_success: float | None = None
    """``time.monotonic()`` of the last successful publish."""
    last_error: str | None = None
    publishes: int = 0
    config_refused: str = ""
    """Why the config file's current content is not used (the previous labels stay), if it is not."""


class Labeler:
    """One labelling step at a time; see the module docstring."""

    def __init__(
        self,
        compute: Callable[[], Labels],
        publish: Callable[[Labels], None],
        timing: LoopTiming,
        *,
        state: LabelerState | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compute = compute
        self.publish = publish
        self.timing = timing
        self.state = state or LabelerState()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._current: Labels | None = None
        self._stamp = 0
        self._next_publish = 0.0

    def backoff(self) -> Backoff:
        return Backoff(initial=self.timing.poll, cap=self.timing.interval)

    def tick(self) -> None:
        """Compute; publish when changed or due. Raises (for the runtime to retry) when either fails."""
        try:
            labels = self.compute()
        except ConfigError as exc:
            if self._current is None:
                self.state.last_error = str(exc)
                raise  # nothing valid yet: a failure like any other
            if str(exc) != self.state.config_refused:
                log.error("the changed configuration is refused; the labels of the previous one stay",
                          extra={"event": "reload", "error": cut(str(exc), 500)})
            self.state.config_refused = cut(str(exc), 500)
            labels = self._current
        except KgpuError as exc:
            self.state.last_error = str(exc)
            raise
        else:
            self.state.config_refused = ""
        if labels != self._current:
            if self._current is not None:
                log.info("labels changed", extra=_diff(self._current, labels))
            self._current, self._stamp = labels, int(self._wall_clock())
            self._next_publish = 0.0
        now = self._monotonic()
        if now < self._next_publish:
            return
        full = {**labels, TIMESTAMP: str(self._stamp)} if self.timing.with_timestamp else dict(labels)
        try:
            self.publish(dict(sorted(full.items())))
        except KgpuError as exc:
            self.state.last_error = str(exc)
            raise
        log.info("labels published", extra={"labels": len(full)})
        self.state.published, self.state.last_success, self.state.last_error = full, self._monotonic(), None
        self.state.publishes += 1
        self._next_publish = now + self.timing.interval


def run_labeler(
    compute: Callable[[], Labels],
    publish: Callable[[Labels], None],
    stop: threading.Event,
    timing: LoopTiming,
    *,
    oneshot: bool = False,
    state: LabelerState | None = None,
    wall_clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> LabelerState:
    """Run a :class:`Labeler` in this thread until ``stop`` is set (or once with ``oneshot``; its failure raises)."""
    labeler = Labeler(compute, publish, timing, state=state, wall_clock=wall_clock, monotonic=monotonic)
    if oneshot:
        labeler.tick()
    else:
        Watcher("labels", labeler.tick, interval=timing.poll, backoff=labeler.backoff()).run(stop)
    return labeler.state


def _diff(old: Labels, new: Labels) -> dict[str, object]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, where: str, minimum: float = 1.0) -> float:
    """Seconds from ``60``, ``60s``, ``1m30s`` or ``500ms`` (Go's duration syntax, as GFD's flags take)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ConfigError(f"{where} {text!r}: expected seconds or a duration such as 60s, 1m30s, 500ms") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds < minimum:
        raise ConfigError(f"{where} {text!r}: must be at least {minimum:g}s")
    return seconds
