"""How long to wait before trying again: one exponential backoff for every retry in kgpu's daemons.

A watcher that fails, a kubelet that refuses a registration, an MPS control daemon that died: each
waits ``initial`` seconds after its first failure, twice that after the next, up to ``cap``; a success
starts over. A failure that comes after ``reset_after`` seconds of success also starts over, so a
daemon that ran for an hour and then crashed is restarted at once, not after the cap.

Example::

    backoff = Backoff(initial=0.5, cap=30)
    delay = backoff.failed()      # 0.5, then 1, 2, 4 … 30
    backoff.succeeded()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    reset_after: float = 60.0
    """Seconds of success after which the next failure waits ``initial`` again."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    failures: int = 0
    """Failures since the last success (or reset)."""
    _ok_since: float | None = field(default=None, repr=False)

    def delay(self, failures: int | None = None) -> float:
        """The wait after failure number ``failures`` (default: the current count). Pure."""
        n = self.failures if failures is None else failures
        if n <= 0:
            return 0.0
        return float(min(self.cap, self.initial * self.factor ** (n - 1)))

    def failed(self) -> float:
        """Count one failure; returns how long to wait before the next attempt."""
        if self._ok_since is not None and self.clock() - self._ok_since >= self.reset_after:
            self.failures = 0
        self._ok_since = None
        self.failures += 1
        return self.delay()

    def succeeded(self) -> None:
        """An attempt worked: the next failure counts from the start once this has lasted ``reset_after``."""
        if self.failures == 0:
            return
        if self._ok_since is None:
            self._ok_since = self.clock()
        if self.clock() - self._ok_since >= self.reset_after:
            self.failures, self._ok_since = 0, None

    def reset(self) -> None:
        """Forget every failure now (e.g. the kubelet restarted: try again at once)."""
        self.failures, self._ok_since = 0, None
