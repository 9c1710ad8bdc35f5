"""A daemon's main thread hears SIGTERM even when the kernel hands the signal to another of its threads."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from kgpu.process import wait_for_stop

WATCHDOG_SECONDS = 20.0
"""Only a failing test waits this long."""


@pytest.fixture
def stop_on_sigusr1() -> Iterator[threading.Event]:
    # SIGUSR1 stands in for SIGTERM, whose handler pytest must keep.
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: stop.set())
    yield stop
    signal.signal(signal.SIGUSR1, previous)


def _signal_from_another_thread(watchdog: threading.Event, stop: threading.Event) -> threading.Thread:
    """A thread that takes SIGUSR1 itself (as gRPC's or the HTTP server's may take SIGTERM), then, should the
    main thread never run the handler, ends the wait so that the test fails instead of hanging."""

    def run() -> None:
        # Let the main thread get into its wait first (if it has not, the test passes without proving much,
        # but it never fails for it).
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        if not stop.wait(WATCHDOG_SECONDS):
            watchdog.set()
            stop.set()

    thread = threading.Thread(target=run, name="not-main")
    thread.start()
    return thread


def test_a_signal_taken_by_another_thread_ends_the_wait(stop_on_sigusr1: threading.Event) -> None:
    # Given a main thread waiting for its stop event, with no timeout
    watchdog = threading.Event()
    thread = _signal_from_another_thread(watchdog, stop_on_sigusr1)
    # When another thread takes the signal, the handler runs in the main thread and the wait ends
    assert wait_for_stop(stop_on_sigusr1) is True
    thread.join()
    assert not watchdog.is_set(), f"the signal handler did not run within {WATCHDOG_SECONDS} s"


def test_a_timed_wait_still_ends_at_its_timeout_without_a_signal() -> None:
    stop = threading.Event()
    assert wait_for_stop(stop, 0.05) is False
    stop.set()
    assert wait_for_stop(stop, 30.0) is True
