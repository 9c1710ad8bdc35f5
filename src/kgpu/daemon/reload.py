"""Live reconfiguration: notice that a config file changed and apply it without a restart.

A ConfigMap mounted in a pod is updated by the kubelet as an atomic swap of a ``..data`` symlink;
an admin on a node rewrites the file in place. Either way the file's *content* changes, so
:class:`ConfigReload` compares what the file holds now with what it held when last applied (a
config file is small; reading it once a second costs nothing) and, when it differs, calls
``load()`` — which does everything that can fail: parse, validate, build the daemon's new view of
the node — and then ``apply(new)``, which swaps it in. A file that is missing, unreadable or
invalid is refused with one log line saying why; the daemon keeps serving the configuration it has,
and :attr:`ConfigReload.refused` says why for the health endpoint and the state file.

Example::

    reload = ConfigReload(path, load=lambda: resolve(path), apply=daemon_view.swap)
    daemon.watch("config", reload.tick, interval=1.0)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from kgpu.errors import KgpuError
from kgpu.log import cut

log = logging.getLogger("kgpu.daemon")

T = TypeVar("T")

READ_LIMIT = 4 * 1024 * 1024
"""Bytes of the file compared; a config file is far smaller (the loader refuses larger ones)."""
RELOAD_INTERVAL_SECONDS = 1.0


def content_digest(path: Path) -> str:
    """A digest of what ``path`` holds now (through symlinks), or why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(READ_LIMIT + 1)).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


class ConfigReload(Generic[T]):
    """A watcher's tick that reloads ``path`` when its content changes; see the module docstring."""

    def __init__(self, path: Path, load: Callable[[], T], apply: Callable[[T], None], what: str = "configuration",
                 reported: Callable[[], None] | None = None):
        self.path = path
        self.load = load
        self.apply = apply
        self.what = what
        self.reported = reported
        """Called after a change was applied or refused (e.g. to rewrite a state file that shows it)."""
        self.reloads = 0
        """Configurations applied since the daemon started (not counting the first)."""
        self.refused = ""
        """Why the file's current content is not in use; empty while it is."""
        self._digest = content_digest(path)
        """What the file held when the daemon started (read before the daemon loads it: a change
        in between is seen by the first tick and applied again, harmlessly)."""

    def tick(self) -> None:
        digest = content_digest(self.path)
        if digest == self._digest:
            return
        self._digest = digest
        try:
            if digest.startswith("unreadable: "):
                raise KgpuError(f"{self.path}: {digest}")
            new = self.load()
        except KgpuError as exc:
            self.refused = cut(str(exc), 500)
            log.error(
                f"the changed {self.what} is refused; still serving the previous one",
                extra={"event": "reload", "path": str(self.path), "error": self.refused},
            )
        else:
            self.apply(new)
            self.reloads += 1
            self.refused = ""
            log.info(f"{self.what} reloaded",
                     extra={"event": "reload", "path": str(self.path), "reloads": self.reloads})
        if self.reported is not None:
            self.reported()

    def describe(self) -> str:
        """One line for the health endpoint."""
        if self.refused:
            return f"config {self.path}: the previous one is kept; its current content is refused: {self.refused}"
        return f"config {self.path}: in use (reloaded {self.reloads} time(s))"
