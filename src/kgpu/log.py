"""Structured logging for every kgpu command and daemon: JSON lines when not a TTY, plain text otherwise."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
HTTP_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")

# Attributes every LogRecord has; anything else passed via ``extra=`` becomes a JSON field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": cut(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = cut(value) if isinstance(value, str) else value
        if record.exc_info:
            out["error"] = cut(self.formatException(record.exc_info), 4 * MAX_FIELD_CHARS)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={cut(str(v))}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        )
        line = f"{record.levelname.lower():7} {cut(record.getMessage())}"
        return f"{line} {extras}" if extras else line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time, so redirection (tests, daemons) never
    leaves the root logger holding a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(level: str = "info", json_output: bool | None = None) -> None:
    """Configure the root logger once; ``json_output=None`` picks JSON when stderr is not a TTY."""
    if json_output is None:
        json_output = not sys.stderr.isatty()
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if json_output else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # lightkube's HTTP library logs every request at INFO ("HTTP Request: PATCH …"): one line per
    # Kubernetes API call drowns what kgpu says. Requests show at debug; their transport never does.
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel("DEBUG" if level.lower() == "debug" and name in ("httpx", "httpx2")
                                         else "WARNING")


MAX_FIELD_CHARS = 2000
"""Longest text a log message or field carries; longer values are cut (a 50 MB value in a config file
must never become a 50 MB log line)."""


def cut(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class ProblemLog:
    """Logs each distinct problem once per ``interval``, with how often it came back meanwhile.

    A watcher that fails every second for the same reason, or a file with a thousand bad lines, gives
    one line per cause per interval, not one per failure. ``cause`` is what makes two problems the
    same (a short stable key such as ``"uuid is not a string"``); ``message`` is what is logged.

    Example::

        problems = ProblemLog(log, interval=60)
        problems.report("nvml-wait", "waiting for NVML events failed", error=str(exc))
    """

    MAX_CAUSES = 256
    """Distinct causes remembered; the oldest is forgotten first (bounded memory whatever the input)."""

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}
        """cause → (when it was last logged, how often it came back since)."""

    def report(
        self, cause: str, message: str, *, level: int = logging.WARNING, exc_info: BaseException | None = None,
        **fields: object,
    ) -> bool:
        """Log ``message`` unless ``cause`` was logged less than ``interval`` ago; True when logged."""
        now = self._clock()
        with self._lock:
            last = self._seen.get(cause)
            if last is not None and now - last[0] < self.interval:
                self._seen[cause] = (last[0], last[1] + 1)
                return False
            repeated = last[1] if last is not None else 0
            self._seen.pop(cause, None)
            if len(self._seen) >= self.MAX_CAUSES:
                self._seen.pop(next(iter(self._seen)))
            self._seen[cause] = (now, 0)
        extra = {k: cut(v) if isinstance(v, str) else v for k, v in fields.items()}
        if repeated:
            extra["repeated"] = repeated  # times this came back since it was last logged
        self.logger.log(level, cut(message), extra=extra, exc_info=exc_info)
        return True

    def forget(self, cause: str) -> None:
        """The problem is over: the next report of ``cause`` is logged at once."""
        with self._lock:
            self._seen.pop(cause, None)
