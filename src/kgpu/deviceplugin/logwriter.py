"""Log lines written in batches by a thread of their own, so that no RPC ever waits on a log write.

The kubelet fails pod admission when Allocate takes too long, and a container's stderr pipe can
block; with :class:`BatchingHandler` a logging call only appends the record to a list (no I/O, no
thread wake-up). A writer thread hands the records to the real handlers every ``interval`` seconds
and once more on :meth:`BatchingHandler.close`.

Example::

    root = logging.getLogger()
    batching = BatchingHandler(list(root.handlers), interval=0.05)
    root.handlers[:] = [batching]
    ...
    batching.close()   # flushes what is left
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

MAX_PENDING = 10_000
"""Records kept while the writer is stuck (a blocked stderr); older ones are dropped and counted."""


class BatchingHandler(logging.Handler):
    def __init__(self, targets: Sequence[logging.Handler], interval: float = 0.05) -> None:
        super().__init__()
        self.targets = tuple(targets)
        self.interval = interval
        self._pending: list[logging.LogRecord] = []
        self._pending_lock = threading.Lock()
        self._dropped = 0
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        record.message = record.getMessage()  # resolve args now: they may change before the write
        record.args = None
        with self._pending_lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(0)
                self._dropped += 1
            self._pending.append(record)

    def _run(self) -> None:
        while not self._closing.wait(self.interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._pending_lock:
            records, self._pending = self._pending, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            text = f"{dropped} log records dropped while the log output was blocked"
            records.insert(0, logging.makeLogRecord(
                {"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING", "msg": text, "message": text}
            ))
        for record in records:
            record.msg = record.message
            for target in self.targets:
                if record.levelno >= target.level:
                    target.handle(record)  # a failing handler reports through handleError; it never raises

    def close(self) -> None:
        """Stop the writer after a last flush."""
        self._closing.set()
        if self._writer.is_alive() and threading.current_thread() is not self._writer:
            self._writer.join(timeout=5)
        super().close()
