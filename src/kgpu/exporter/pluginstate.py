"""The device plugin's view, from the state file it rewrites atomically on every change.

The file's shape is one contract, :class:`kgpu.deviceplugin.statefile.PluginState`, which the plugin
writes and this module reads. The exporter turns it into kgpu series: per advertised device its
health as sent to the kubelet and its Allocate count, per resource whether it is registered, and
MPS slice limits.

Example::

    state = PluginStateFile(Path("/run/kgpu/device-plugin/state.json")).read()
    [d.id for r in state.resources for d in r.devices] if state else []
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kgpu.deviceplugin.statefile import PluginState, StateFileError, read_state
from kgpu.errors import KgpuError

log = logging.getLogger(__name__)


class PluginStateFile:
    """Reads the state file when it changed (inode, size, mtime); absent file → None, quietly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._state: PluginState | None = None
        self._problem = ""

    def read(self) -> PluginState | None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._key, self._state = None, None
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._key:
            return self._state
        self._key = key
        try:
            self._state = read_state(self.path)
            self._problem = ""
        except (KgpuError, StateFileError) as exc:
            if str(exc) != self._problem:
                log.warning("device plugin state unreadable, its series are left out: %s", exc)
            self._problem, self._state = str(exc), None
        return self._state
