"""Log lines written in batches by a thread of their own, so that no RPC ever waits on a log write.

The kubelet fails pod admission when Allocate takes too long, and a container's stderr pipe can
block; with :class:`BatchingHandler` a logging call only appends the record to a list (no I/O, no
thread wake-up). A writer thread hands the records to the real handlers every ``interval`` seconds
and once more on :meth:`BatchingHandler.close`, :data:`CHUNK` records at a time, stepping aside
between chunks so that an RPC thread waiting for the GIL gets it. Stream handlers (stderr) get each
chunk in one write.

On a request path even building a ``LogRecord`` is most of the cost of a log line (the caller
lookup, the record's ~25 attributes, the handler locks). :func:`log_soon` skips that: while a
:class:`BatchingHandler` is installed (:meth:`BatchingHandler.install`), it appends the line's
level, message, fields and time, and the writer thread builds the record. The line written is the
same, with the time of the call.

Example::

    batching = BatchingHandler.install(interval=0.05)   # takes over the root logger's handlers
    log_soon(log, logging.INFO, "allocated", {"event": "allocate", "devices": ids})
    ...
    batching.close()   # flushes what is left and puts the root logger's handlers back
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

MAX_PENDING = 10_000
"""Records kept while the writer is stuck (a blocked stderr); older ones are dropped and counted."""
CHUNK = 16
"""Records built, formatted and written at a time (~0.2 ms of work); the writer steps aside for other
threads between chunks, so a busy batch (200 lines: ~2.5 ms) never holds the GIL in one piece."""
_YIELD_SECONDS = 0.0001

_Deferred = tuple[logging.Logger, int, str, Mapping[str, Any], float]
"""(logger, level, message, extra fields, time.time() of the call): a record not built yet."""

_installed: BatchingHandler | None = None


def log_soon(logger: logging.Logger, level: int, msg: str, extra: Mapping[str, Any]) -> None:
    """``logger.log(level, msg, extra=extra)``; while a BatchingHandler is installed on the root logger,
    the record is built later on its writer thread (the caller only appends a tuple).

    ``extra`` must not be changed after the call. The logger must log through the root logger's
    handlers only (no handlers or filters of its own), as every kgpu logger does.
    """
    batching = _installed
    if batching is not None and not logger.handlers and not logger.filters:
        if logger.isEnabledFor(level):
            batching.defer((logger, level, msg, extra, time.time()))
        return
    logger.log(level, msg, extra=dict(extra))


class BatchingHandler(logging.Handler):
    def __init__(self, targets: Sequence[logging.Handler], interval: float = 0.05) -> None:
        super().__init__()
        self.targets = tuple(targets)
        self.interval = interval
        self._pending: list[logging.LogRecord | _Deferred] = []
        self._pending_lock = threading.Lock()
        self._dropped = 0
        self._replaced: list[logging.Handler] | None = None
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._writer.start()

    @classmethod
    def install(cls, interval: float = 0.05) -> BatchingHandler:
        """Put a BatchingHandler in front of the root logger's handlers (and serve :func:`log_soon`)."""
        global _installed
        root = logging.getLogger()
        handler = cls(list(root.handlers), interval=interval)
        handler._replaced = list(root.handlers)
        root.handlers[:] = [handler]
        _installed = handler
        return handler

    def emit(self, record: logging.LogRecord) -> None:
        record.message = record.getMessage()  # resolve args now: they may change before the write
        record.args = None
        self._append(record)

    def defer(self, entry: _Deferred) -> None:
        self._append(entry)

    def _append(self, entry: logging.LogRecord | _Deferred) -> None:
        with self._pending_lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(0)
                self._dropped += 1
            self._pending.append(entry)

    def _run(self) -> None:
        while not self._closing.wait(self.interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._pending_lock:
            entries, self._pending = self._pending, []
            dropped, self._dropped = self._dropped, 0
        if not entries and not dropped:
            return
        first: list[logging.LogRecord] = []
        if dropped:
            text = f"{dropped} log records dropped while the log output was blocked"
            first.append(logging.makeLogRecord(
                {"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING", "msg": text, "message": text}
            ))
        for start in range(0, max(len(entries), 1), CHUNK):
            if start:
                # Let a waiting RPC thread have the GIL: formatting a whole busy batch in one go would hold
                # it for milliseconds, and a thread that merely asks for it waits up to the 5 ms switch interval.
                time.sleep(_YIELD_SECONDS)
            records = first + [_record(e) for e in entries[start:start + CHUNK]]
            first = []
            for record in records:
                record.msg = record.message
            for target in self.targets:
                _write(target, records)

    def close(self) -> None:
        """Stop the writer after a last flush (and give the root logger its handlers back, if installed)."""
        global _installed
        if _installed is self:
            _installed = None
        self._closing.set()
        if self._writer.is_alive() and threading.current_thread() is not self._writer:
            self._writer.join(timeout=5)
        if not self._writer.is_alive():
            self.flush()  # whatever was appended while the writer was stopping (not when it is stuck writing)
        root = logging.getLogger()
        if self._replaced is not None and self in root.handlers:
            root.handlers[:] = self._replaced
        super().close()


def _record(entry: logging.LogRecord | _Deferred) -> logging.LogRecord:
    if isinstance(entry, logging.LogRecord):
        return entry
    logger, level, msg, extra, created = entry
    record = logger.makeRecord(logger.name, level, "(deferred)", 0, msg, (), None, extra=dict(extra))
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.message = record.getMessage()
    return record


def _write(target: logging.Handler, records: list[logging.LogRecord]) -> None:
    """Hand ``records`` to ``target``; a plain stream handler gets them in one write."""
    chosen = [r for r in records if r.levelno >= target.level]
    if not chosen:
        return
    if not isinstance(target, logging.StreamHandler) or type(target).emit is not logging.StreamHandler.emit:
        for record in chosen:
            target.handle(record)  # a failing handler reports through handleError; it never raises
        return
    lines = []
    for record in chosen:
        if not target.filter(record):
            continue
        try:
            lines.append(target.format(record) + target.terminator)
        except Exception:
            target.handleError(record)
    if not lines:
        return
    target.acquire()
    try:
        target.stream.write("".join(lines))
        target.flush()
    except Exception:
        target.handleError(chosen[-1])
    finally:
        target.release()
