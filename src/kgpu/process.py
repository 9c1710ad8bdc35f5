"""Process-level care for kgpu's long-running daemons: memory phases in the log, a settled heap, SIGTERM.

* :func:`log_memory` writes one debug line ``{"event": "memory", "phase": ..., "rss_mb": ...}`` with
  the process's resident memory, so ``KGPU_LOG_LEVEL=debug`` shows what each start-up phase costs
  (``scripts/device/perf.sh`` prints them on a real node).
* :func:`settle_heap`, once start-up is done: a full collection, then ``gc.freeze()``, which moves
  every object alive at that point (modules, the inventory, the gRPC stubs) out of the collector's
  reach. Later collections walk only what requests create, so a full collection no longer pauses a
  request for milliseconds.
* :func:`wait_for_stop`: how the main thread of a daemon waits for the event its SIGTERM handler
  sets. CPython runs a signal handler only in the main thread, between two bytecodes; when the
  kernel hands SIGTERM to another thread (gRPC's, the HTTP server's, a GPU reader's, the log
  writer's) the handler is merely queued, and a main thread blocked in an untimed
  ``Event.wait()`` never gets to run it: the daemon would ignore SIGTERM until the kubelet kills
  it. Waiting in slices of at most :data:`SIGNAL_LATENCY_SECONDS` bounds that delay.

Example::

    log_memory(log, "inventory")      # debug: {"event": "memory", "phase": "inventory", "rss_mb": 41.2}
    settle_heap()
    wait_for_stop(stop)               # returns within half a second of SIGTERM, whichever thread got it
"""

from __future__ import annotations

import gc
import logging
import threading
import time

SIGNAL_LATENCY_SECONDS = 0.5
"""Longest the main thread blocks at a time, so a queued signal handler runs within this."""


def rss_mb() -> float | None:
    """This process's resident memory (VmRSS) in MB, or None where /proc is not Linux's."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def log_memory(logger: logging.Logger, phase: str) -> None:
    """One debug line with the resident memory after ``phase`` (nothing is read unless debug is on)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("memory", extra={"event": "memory", "phase": phase, "rss_mb": rss_mb()})


def settle_heap() -> None:
    """Collect start-up garbage, then freeze what is left out of the cyclic collector's reach."""
    gc.collect()
    gc.freeze()


def wait_for_stop(stop: threading.Event, timeout: float | None = None) -> bool:
    """``stop.wait(timeout)`` for a main thread whose signal handlers set ``stop`` (see the module docstring)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SIGNAL_LATENCY_SECONDS if deadline is None else min(SIGNAL_LATENCY_SECONDS, deadline - time.monotonic())
        if left <= 0:
            return stop.is_set()
        if stop.wait(left):
            return True
