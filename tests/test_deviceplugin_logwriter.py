"""Log records reach the real handlers from the writer thread, in order, with nothing lost on close."""

from __future__ import annotations

import logging

import kgpu.deviceplugin.logwriter as logwriter
from kgpu.deviceplugin.logwriter import BatchingHandler


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()} {getattr(record, 'event', '-')}")


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger("test-logwriter")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


def test_records_arrive_in_order_with_their_extras_and_args_resolved() -> None:
    target = Collect()
    batching = BatchingHandler([target], interval=60)  # only close() flushes here
    log = _logger(batching)
    devices = ["GPU-a"]
    log.info("allocated %s", devices, extra={"event": "allocate"})
    devices.append("GPU-b")  # changed after the call: the line keeps what was logged
    log.warning("device unhealthy", extra={"event": "health"})
    assert target.lines == []  # nothing written in the caller's thread
    batching.close()
    assert target.lines == ["INFO allocated ['GPU-a'] allocate", "WARNING device unhealthy health"]


def test_target_levels_are_respected() -> None:
    target = Collect()
    target.setLevel(logging.WARNING)
    batching = BatchingHandler([target], interval=60)
    log = _logger(batching)
    log.info("quiet")
    log.error("loud")
    batching.close()
    assert target.lines == ["ERROR loud -"]


def test_a_blocked_output_drops_the_oldest_records_and_says_how_many(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(logwriter, "MAX_PENDING", 3)
    target = Collect()
    batching = BatchingHandler([target], interval=60)
    log = _logger(batching)
    for i in range(5):
        log.info("line %d", i)
    batching.close()
    assert target.lines == [
        "WARNING 2 log records dropped while the log output was blocked -",
        "INFO line 2 -", "INFO line 3 -", "INFO line 4 -",
    ]


class CountingStream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_a_stream_gets_each_batch_in_one_write_in_order() -> None:
    stream = CountingStream()
    target = logging.StreamHandler(stream)  # type: ignore[arg-type]
    batching = BatchingHandler([target], interval=60)
    log = _logger(batching)
    for i in range(3):
        log.info("line %d", i)
    batching.close()
    assert stream.writes == ["line 0\nline 1\nline 2\n"]


def test_a_line_logged_soon_is_built_by_the_writer_with_the_time_of_the_call(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kgpu.log import JsonFormatter

    stream = CountingStream()
    target = logging.StreamHandler(stream)  # type: ignore[arg-type]
    target.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers[:] = [target]
    root.setLevel(logging.INFO)
    try:
        batching = BatchingHandler.install(interval=60)
        monkeypatch.setattr(logwriter.time, "time", lambda: 1_700_000_000.25)
        logwriter.log_soon(logging.getLogger("kgpu.test"), logging.INFO, "allocated", {"event": "allocate"})
        logwriter.log_soon(logging.getLogger("kgpu.test"), logging.DEBUG, "too fine", {"event": "x"})
        monkeypatch.undo()
        assert stream.writes == []
        batching.close()
    finally:
        root.handlers[:], root.level = saved_handlers, saved_level
    (line,) = stream.writes[0].splitlines()
    assert line == (
        '{"ts": "2023-11-14T22:13:20.250Z", "level": "info", "logger": "kgpu.test", "msg": "allocated", '
        '"event": "allocate"}'
    )


def test_a_long_batch_is_written_in_chunks_complete_and_in_order() -> None:
    stream = CountingStream()
    batching = BatchingHandler([logging.StreamHandler(stream)], interval=60)  # type: ignore[arg-type]
    log = _logger(batching)
    count = 2 * logwriter.CHUNK + 3
    for i in range(count):
        log.info("line %d", i)
    batching.close()
    assert len(stream.writes) == 3
    assert "".join(stream.writes).splitlines() == [f"line {i}" for i in range(count)]
