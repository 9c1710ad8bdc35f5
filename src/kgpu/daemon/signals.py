"""SIGTERM and SIGINT for kgpu's daemons: stop at once, whatever the process is doing, and never linger.

CPython runs a Python signal handler only in the main thread, between two bytecodes: a main thread
blocked in C (``nvmlInit``, a gRPC call, a lock) or busy in a long computation would hear SIGTERM
late, and one that never gets back to the interpreter not at all. So the handler does not depend
on the main thread: Python's C-level handler writes the signal number to a pipe
(:func:`signal.set_wakeup_fd`) the moment the signal arrives, whichever thread the kernel picked, and a
small thread waiting on that pipe sets the stop event and arms a deadline. When the daemon has not
finished stopping ``grace`` seconds after the first signal (a kubelet that does not answer, a GPU
call that hangs), the deadline logs what was still running and ends the process. A second signal
ends it at once.

Example::

    stop = threading.Event()
    with StopSignals(stop, grace=1.5):
        serve(stop)                  # returns once stop is set; cleanup has 1.5 s
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType, TracebackType

log = logging.getLogger("kgpu.daemon")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_GRACE_SECONDS = 1.5
"""Time a daemon has to stop cleanly after SIGTERM; the kubelet, Kubernetes and admins expect < 2 s."""
FORCED_EXIT_CODE = 1


class StopSignals:
    """While entered: SIGTERM/SIGINT set ``stop``; ``grace`` seconds later the process exits regardless."""

    def __init__(self, stop: threading.Event, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        self.stop = stop
        self.grace = grace
        self.received: int | None = None
        """The first stop signal received, if any."""
        self._read_fd = -1
        self._write_fd = -1
        self._previous: dict[int, object] = {}
        self._previous_wakeup = -1
        self._reader: threading.Thread | None = None
        self._deadline: threading.Timer | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("StopSignals must be entered in the main thread (signal handlers live there)")
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_python_handler)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._reader = threading.Thread(target=self._read, name="kgpu-signals", daemon=True)
        self._reader.start()
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        os.close(self._write_fd)  # the reader sees end-of-file and returns
        if self._reader is not None:
            self._reader.join(timeout=1)
        os.close(self._read_fd)
        with self._lock:
            if self._deadline is not None:
                self._deadline.cancel()  # stopped in time

    @staticmethod
    def _on_python_handler(signum: int, frame: FrameType | None) -> None:
        """Does nothing: the wakeup pipe carries the signal. Installing it keeps Python from raising
        KeyboardInterrupt or taking the default action (ending the process without cleanup)."""

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._received(signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        with self._lock:
            first = self.received is None
            if first:
                self.received = signum
                self._deadline = threading.Timer(self.grace, self._too_late)
                self._deadline.daemon = True
                self._deadline.name = "kgpu-stop-deadline"
                self._deadline.start()
        if not first:
            self._exit(f"second stop signal ({name})")
        log.info("stopping", extra={"event": "stop", "signal": name})
        self.stop.set()

    def _too_late(self) -> None:
        running = sorted(
            t.name for t in threading.enumerate() if t not in (threading.current_thread(), self._reader)
        )
        self._exit(f"not stopped {self.grace:g} s after the signal", running)

    def _exit(self, why: str, running: list[str] | None = None) -> None:
        log.warning("exiting without a clean stop", extra={"event": "stop", "reason": why,
                                                            "still_running": running or []})
        for flushable in (*logging.getLogger().handlers, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # exiting anyway
                if flushable is not None:
                    flushable.flush()
        os._exit(FORCED_EXIT_CODE)
