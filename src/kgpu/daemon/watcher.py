"""A supervised watcher: one reaction called over and over in its own thread, never silenced by a failure.

A daemon is a handful of watchers (the kubelet's socket, the GPUs' health events, the config file,
the MPS control daemons …). Each supplies a ``tick``: one step of its work, which returns within a
second or so (a blocking wait is cut into slices). The watcher calls it every ``interval`` seconds
until the daemon stops. When a tick raises, the failure is logged once per distinct cause per
minute, the watcher waits with :class:`~kgpu.daemon.backoff.Backoff` and calls ``tick`` again — on
the same object, so it goes on from where it was (a file follower keeps its offset; nothing is
replayed). A watcher never ends because its reaction failed.

What a watcher knows about itself (running, failing since when and why, stuck in a tick) is what
the daemon's health endpoint reports.

Example::

    watcher = Watcher("health-events", feed_tick, interval=0)
    watcher.start(stop)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kgpu.daemon.backoff import Backoff
from kgpu.log import ProblemLog, cut

log = logging.getLogger("kgpu.daemon")

DEFAULT_STUCK_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class WatcherStatus:
    """One watcher as the health endpoint shows it."""

    name: str
    state: str
    """``starting``, ``running``, ``retrying`` (its last tick failed) or ``stopped``."""
    ticks: int
    failures: int
    """Failed ticks since the watcher started."""
    error: str = ""
    """Why the last tick failed, while it is retrying."""
    failing_for: float = 0.0
    """Seconds since the first of the current run of failures."""
    in_tick_for: float = 0.0
    """Seconds the current tick has been running (0 between ticks)."""

    def problem(self, unhealthy_after: float, stuck_after: float) -> str:
        """Why this watcher makes the daemon unhealthy, or an empty string."""
        if self.state == "retrying" and self.failing_for >= unhealthy_after:
            return f"{self.name}: failing for {self.failing_for:.0f} s: {self.error}"
        if self.in_tick_for >= stuck_after:
            return f"{self.name}: stuck for {self.in_tick_for:.0f} s in one step"
        return ""


class Watcher:
    """Calls ``tick()`` every ``interval`` seconds in a thread of its own until stopped; see the module doc."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], None],
        *,
        interval: float = 1.0,
        backoff: Backoff | None = None,
        unhealthy_after: float = 60.0,
        stuck_after: float = DEFAULT_STUCK_SECONDS,
        problems: ProblemLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.tick = tick
        self.interval = interval
        self.backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self.unhealthy_after = unhealthy_after
        """A watcher failing for this long makes the daemon unhealthy."""
        self.stuck_after = stuck_after
        """A tick running for this long makes the daemon unhealthy (a GPU call that hangs, a deadlock)."""
        self.problems = problems or ProblemLog(log)
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._state = "starting"
        self._ticks = 0
        self._failures = 0
        self._error = ""
        self._failing_since: float | None = None
        self._tick_started: float | None = None

    # -- running -----------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> Watcher:
        self._thread = threading.Thread(target=self.run, args=(stop,), name=f"kgpu-{self.name}", daemon=True)
        self._thread.start()
        return self

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set (in the calling thread; :meth:`start` runs it in a new one)."""
        while not stop.is_set():
            wait = self.step()
            if wait > 0 and stop.wait(wait):
                break
        self._state = "stopped"

    def step(self) -> float:
        """One supervised tick; returns how long to wait before the next one."""
        self._tick_started = self._clock()
        try:
            self.tick()
        except Exception as exc:  # whatever a reaction raises, the watcher goes on
            return self._failed(exc)
        finally:
            self._tick_started = None
        self._ticks += 1
        if self._failing_since is not None:
            log.info("recovered", extra={"event": "watcher", "watcher": self.name,
                                         "failed_for_s": round(self._clock() - self._failing_since, 1)})
            self.problems.forget(self._cause)
        self._state, self._error, self._failing_since = "running", "", None
        self.backoff.succeeded()
        return self.interval

    _cause = ""

    def _failed(self, exc: Exception) -> float:
        self._failures += 1
        error = cut(str(exc) or type(exc).__name__, 500)
        delay = self.backoff.failed()
        if self._failing_since is None:
            self._failing_since = self._clock()
        self._state, self._error = "retrying", error
        self._cause = f"{self.name}: {type(exc).__name__}: {error}"
        # A bug (not an expected failure such as a KgpuError or an OSError) logs its traceback, once.
        expected = isinstance(exc, OSError) or type(exc).__module__.startswith("kgpu")
        self.problems.report(
            self._cause, "failed; retrying", event="watcher", watcher=self.name, error=error,
            error_type=type(exc).__name__, retry_in_s=round(delay, 2),
            exc_info=None if expected else exc,
        )
        return delay

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; False if it is still in a tick after ``timeout``."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- what the health endpoint shows --------------------------------------------------------

    def status(self) -> WatcherStatus:
        now = self._clock()
        started = self._tick_started
        return WatcherStatus(
            name=self.name,
            state=self._state,
            ticks=self._ticks,
            failures=self._failures,
            error=self._error,
            failing_for=0.0 if self._failing_since is None else now - self._failing_since,
            in_tick_for=0.0 if started is None else now - started,
        )

    def problem(self) -> str:
        return self.status().problem(self.unhealthy_after, self.stuck_after)
