"""Process-level care for kgpu's long-running daemons: memory phases in the log, a settled heap.

* :func:`log_memory` writes one debug line ``{"event": "memory", "phase": ..., "rss_mb": ...}`` with
  the process's resident memory, so ``KGPU_LOG_LEVEL=debug`` shows what each start-up phase costs
  (``scripts/device/perf.sh`` prints them on a real node).
* :func:`settle_heap`, once start-up is done: a full collection, then ``gc.freeze()``, which moves
  every object alive at that point (modules, the inventory, the gRPC stubs) out of the collector's
  reach. Later collections walk only what requests create, so a full collection no longer pauses a
  request for milliseconds.

Example::

    log_memory(log, "inventory")      # debug: {"event": "memory", "phase": "inventory", "rss_mb": 41.2}
    settle_heap()
"""

from __future__ import annotations

import gc
import logging


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
