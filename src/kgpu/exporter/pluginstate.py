"""The device plugin's view, from the state file it rewrites atomically on every change.

The file's shape is documented in :mod:`kgpu.deviceplugin.daemon` (``version: 1``). The exporter
turns it into kgpu series: per advertised device its health as sent to the kubelet and its
Allocate count, per resource whether it is registered. A device entry may also carry MPS limits,
``"mps": {"memory_mib": 20480, "compute_percent": 25}``, which become the slice-limit series.

Example::

    state = parse_plugin_state(Path("/run/kgpu/device-plugin/state.json").read_text(), "state.json")
    [d.id for r in state.resources for d in r.devices]
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError
from kgpu.fsio import read_text

log = logging.getLogger(__name__)

SUPPORTED_VERSION = 1


class PluginStateError(ValueError):
    """The state file is not what the device plugin writes; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class MpsLimits:
    memory_mib: int | None
    compute_percent: int | None


@dataclass(frozen=True, slots=True)
class PluginDevice:
    id: str
    gpu_uuid: str
    replica: int | str | None
    healthy: bool
    reason: str
    allocations: int
    mps: MpsLimits | None = None


@dataclass(frozen=True, slots=True)
class PluginResource:
    name: str
    registered: bool
    devices: tuple[PluginDevice, ...]


@dataclass(frozen=True, slots=True)
class PluginState:
    resources: tuple[PluginResource, ...]
    updated: str = ""
    device_list_strategy: tuple[str, ...] = ()
    """How the plugin hands devices to the runtime (``envvar``, ``driver-mounts``, …); empty when unknown."""
    nvidia_driver_root: str | None = None

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resources)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_plugin_state(text: str, source: str) -> PluginState:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PluginStateError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(raw, dict):
        raise PluginStateError(f"{source}: expected a JSON object with version and resources")
    if raw.get("version") != SUPPORTED_VERSION:
        raise PluginStateError(f"{source}: version {raw.get('version')!r}; this exporter reads version "
                               f"{SUPPORTED_VERSION}")
    resources = []
    try:
        for r in raw["resources"]:
            devices = []
            for d in r["devices"]:
                mps = d.get("mps")
                devices.append(PluginDevice(
                    id=str(d["id"]), gpu_uuid=str(d["gpu_uuid"]), replica=d.get("replica"),
                    healthy=d["health"] == "Healthy", reason=str(d.get("reason", "")),
                    allocations=int(d.get("allocations", 0)),
                    mps=MpsLimits(_int_or_none(mps.get("memory_mib")), _int_or_none(mps.get("compute_percent")))
                    if isinstance(mps, dict) else None,
                ))
            resources.append(PluginResource(str(r["name"]), bool(r.get("registered", False)), tuple(devices)))
    except (KeyError, TypeError, ValueError) as exc:
        raise PluginStateError(f"{source}: resources: missing or malformed field ({exc!r})") from exc
    strategy = raw.get("device_list_strategy")
    driver_root = raw.get("nvidia_driver_root")
    return PluginState(
        tuple(resources), str(raw.get("updated", "")),
        device_list_strategy=tuple(str(s) for s in strategy) if isinstance(strategy, list) else (),
        nvidia_driver_root=driver_root if isinstance(driver_root, str) else None,
    )


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
            self._state = parse_plugin_state(read_text(self.path), str(self.path))
            self._problem = ""
        except (KgpuError, PluginStateError) as exc:
            if str(exc) != self._problem:
                log.warning("device plugin state unreadable, its series are left out: %s", exc)
            self._problem, self._state = str(exc), None
        return self._state
