"""The small runtime every kgpu daemon runs on: signals, supervised watchers, health, a clean stop.

kopf's idea, for node daemons: the runtime owns the waiting, retrying and shutting down; a daemon
supplies reactions. :class:`Daemon` is entered once, first thing, so that SIGTERM is honoured even
while the daemon is still starting (:class:`~kgpu.daemon.signals.StopSignals`); then the daemon adds
its watchers (:meth:`Daemon.watch`), optionally an HTTP endpoint with ``/healthz``
(:meth:`Daemon.serve_http`), cleanups (:meth:`Daemon.on_stop`), and calls :meth:`Daemon.serve`,
which returns once stopped. Leaving the ``with`` block stops the watchers and runs the cleanups in
reverse order, within the grace period that the signal deadline enforces.

Health (``/healthz``): 200 while every watcher ticks; 503 when one has been failing for longer
than its ``unhealthy_after`` or is stuck in one tick, with one line per watcher saying why. A refused
config reload is reported but keeps 200: the daemon still serves the configuration it has, and a
restart would not help.

Example::

    with Daemon("labeler") as daemon:
        daemon.watch("labels", labeler.tick, interval=5)
        daemon.serve_http(parse_listen(":8081", "--healthz"))
        daemon.serve()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from kgpu.daemon.http import HttpEndpoint, Response, Route
from kgpu.daemon.reload import ConfigReload
from kgpu.daemon.signals import DEFAULT_GRACE_SECONDS, StopSignals
from kgpu.daemon.watcher import Watcher
from kgpu.log import ProblemLog

log = logging.getLogger("kgpu.daemon")


class Daemon:
    """One daemon process's runtime; see the module docstring."""

    def __init__(self, name: str, *, grace: float = DEFAULT_GRACE_SECONDS, stop: threading.Event | None = None):
        self.name = name
        self.grace = grace
        self.stop = stop or threading.Event()
        self.problems = ProblemLog(logging.getLogger(f"kgpu.{name}"))
        """Repeated failures of this daemon's watchers, logged once per cause per minute."""
        self.watchers: list[Watcher] = []
        self.config: ConfigReload[Any] | None = None
        """The config file watcher, if the daemon reloads one (its state is part of the health)."""
        self._cleanups: list[Callable[[], None]] = []
        self._signals: StopSignals | None = None
        self._started = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Daemon:
        if threading.current_thread() is threading.main_thread():
            self._signals = StopSignals(self.stop, self.grace).__enter__()
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.shutdown()
        finally:
            if self._signals is not None:
                self._signals.__exit__(typ, exc, tb)

    def serve(self) -> None:
        """Start every watcher, then wait until stopped (SIGTERM, SIGINT or ``stop.set()``)."""
        for watcher in self.watchers:
            watcher.start(self.stop)
        self.stop.wait()

    def shutdown(self) -> None:
        """Stop the watchers and run the cleanups, newest first.

        Watchers get a third of the grace period to finish their step; one still blocked after that (a
        kubelet that does not answer a registration) is left to end with the process, so that the
        cleanups — sockets removed, control daemons told to quit, final state written — still run in time.
        """
        self.stop.set()
        deadline = time.monotonic() + self.grace / 3
        for watcher in self.watchers:
            if not watcher.join(max(deadline - time.monotonic(), 0.0)):
                log.warning("a watcher is still in its step; stopping without it", extra={"watcher": watcher.name})
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                cleanup()
            except Exception:  # the other cleanups must still run
                log.exception("cleanup failed", extra={"daemon": self.name})

    # -- building ----------------------------------------------------------------------------

    def watch(self, name: str, tick: Callable[[], None], *, interval: float, **options: Any) -> Watcher:
        """Add a supervised watcher calling ``tick`` every ``interval`` s (see :class:`Watcher`)."""
        watcher = Watcher(name, tick, interval=interval, problems=self.problems, **options)
        self.watchers.append(watcher)
        return watcher

    def reload(self, reload: ConfigReload[Any], interval: float = 1.0) -> Watcher:
        """Watch a config file (its refusals appear in the health report)."""
        self.config = reload
        return self.watch("config", reload.tick, interval=interval)

    def on_stop(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def serve_http(self, address: tuple[str, int], routes: Mapping[str, Route] | None = None,
                   flag: str = "--healthz") -> HttpEndpoint:
        """Serve ``/healthz`` (and ``routes``) on ``address`` until the daemon stops."""
        endpoint = HttpEndpoint(address, {"/healthz": self.health_response, **(routes or {})}, flag).start()
        self.on_stop(endpoint.stop)
        return endpoint

    # -- health ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, list[str]]:
        """(healthy, one line per watcher and the config file)."""
        problems = [p for w in self.watchers if (p := w.problem())]
        lines = [f"{self.name}: up {time.monotonic() - self._started:.0f} s"]
        for w in self.watchers:
            s = w.status()
            line = f"{s.name}: {s.state}, {s.ticks} steps"
            lines.append(f"{line}, failing: {s.error}" if s.state == "retrying" else line)
        if self.config is not None:
            lines.append(self.config.describe())
        return not problems, problems + lines

    def health_response(self) -> Response:
        ok, lines = self.health()
        body = "\n".join(["ok" if ok else "unhealthy", *lines]) + "\n"
        return Response(200 if ok else 503, body.encode())
