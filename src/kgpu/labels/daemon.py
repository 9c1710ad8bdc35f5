"""The labeler's loop: compute labels, publish them, again every interval and at once on change.

The loop owns the waiting, retrying and stopping; the reactions are two plain functions:
``compute()`` returns the labels without the timestamp (it re-reads the inventory, config file
and host facts), ``publish(labels)`` writes them somewhere. The loop polls ``compute`` every
``poll`` seconds and publishes when the labels differ from the last ones published, or when
``interval`` has passed since the last publish (re-asserting labels someone removed).

``nvidia.com/gfd.timestamp``: GFD stamps the time its labelling run started (process start or
config reload), not every rewrite; kgpu stamps the time the current label set was first
computed, so it moves when the labels change and not on every interval.

Example::

    stop = threading.Event()
    run_labeler(compute, publish, stop, LoopTiming(interval=60, poll=5))
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kgpu.errors import ConfigError, KgpuError
from kgpu.labels.gfd import TIMESTAMP, Labels
from kgpu.process import wait_for_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoopTiming:
    interval: float = 60.0
    """Seconds between publishes when nothing changes (GFD's ``--sleep-interval``)."""
    poll: float = 5.0
    """Seconds between checks for changed inventory, config or host facts."""
    with_timestamp: bool = True


@dataclass(slots=True)
class LabelerState:
    """What the loop knows; read by the health endpoint."""

    published: Labels | None = None
    last_success: float | None = None
    """``time.monotonic()`` of the last successful publish."""
    last_error: str | None = None
    publishes: int = 0

    def healthy(self, timing: LoopTiming, now: float) -> bool:
        """Healthy until the first attempt, then while the last success is recent enough."""
        if self.last_success is None:
            return self.last_error is None
        return now - self.last_success <= 2 * timing.interval + timing.poll


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
    """Run until ``stop`` is set (or once with ``oneshot``; its failure raises)."""
    state = state or LabelerState()
    current: Labels | None = None
    stamp = 0
    next_publish = 0.0
    backoff = timing.poll
    while not stop.is_set():
        try:
            labels = compute()
        except KgpuError as exc:
            if oneshot:
                raise
            log.error("computing labels failed; retrying", extra={"error": str(exc), "retry_s": backoff})
            state.last_error = str(exc)
            wait_for_stop(stop, backoff)
            backoff = min(backoff * 2, timing.interval)
            continue
        if labels != current:
            if current is not None:
                log.info("labels changed", extra=_diff(current, labels))
            current, stamp = labels, int(wall_clock())
            next_publish = 0.0
        now = monotonic()
        if now >= next_publish:
            full = {**current, TIMESTAMP: str(stamp)} if timing.with_timestamp else dict(current)
            try:
                publish(dict(sorted(full.items())))
            except KgpuError as exc:
                if oneshot:
                    raise
                log.error("publishing labels failed; retrying", extra={"error": str(exc), "retry_s": backoff})
                state.last_error = str(exc)
                next_publish = now + backoff
                backoff = min(backoff * 2, timing.interval)
            else:
                log.info("labels published", extra={"labels": len(full)})
                state.published, state.last_success, state.last_error = full, monotonic(), None
                state.publishes += 1
                next_publish = now + timing.interval
                backoff = timing.poll
        if oneshot:
            break
        wait_for_stop(stop, timing.poll)
    return state


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


def parse_listen(addr: str) -> tuple[str, int]:
    """``:8080`` / ``0.0.0.0:8080`` / ``127.0.0.1:0`` → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise KgpuError(f"--healthz {addr!r}: expected HOST:PORT or :PORT, e.g. :8081")
    return host or "0.0.0.0", int(port)


def serve_health(addr: str, state: LabelerState, timing: LoopTiming) -> Any:
    """Serve ``GET /healthz`` (200 ``ok`` / 503 with the last error) from a daemon thread.

    Returns the server; call ``shutdown()`` then ``server_close()`` to stop it.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/healthz":
                self.send_error(404)
                return
            ok = state.healthy(timing, time.monotonic())
            body = b"ok\n" if ok else f"unhealthy: {state.last_error or 'no labels published recently'}\n".encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer(parse_listen(addr), Handler)
    except OSError as exc:
        raise KgpuError(f"--healthz {addr}: cannot listen: {exc.strerror or exc}") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kgpu-labeler-healthz", daemon=True).start()
    return server
