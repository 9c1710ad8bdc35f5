"""The device plugin's state file: one typed contract, written by the plugin and read by the exporter.

The plugin rewrites ``/run/kgpu/device-plugin/state.json`` atomically whenever what it tells the
kubelet changes (and at least every 30 s, so ``updated`` shows it is alive); the exporter turns it
into ``kgpu_device_plugin_*`` series; admins read it with ``jq``. Both sides use :class:`PluginState`,
so the shape is declared here and nowhere else::

    {
      "version": 1, "pid": 4242, "updated": "2026-01-01T12:00:00.000Z",
      "kubelet_dir": "/var/lib/kubelet/device-plugins",
      "health_policy": "ignoring XIDs 13,31,43,45,68,109",
      "config": {"file": "/etc/kgpu/config.yaml", "reloads": 1, "refused": ""},
      "device_list_strategy": ["envvar"], "nvidia_driver_root": "/",
      "resources": [
        {"name": "nvidia.com/gpu", "socket": "nvidia-gpu.sock", "registered": true, "registrations": 1,
         "devices": [{"id": "GPU-…", "gpu_uuid": "GPU-…", "replica": null, "numa_node": 0,
                      "health": "Healthy", "reason": "", "allocations": 2}]}
      ]
    }

``replica`` is the replica number of a shared device (``<id>::<n>``), else null; an MPS slice also
carries ``"mps": {"memory_mib": 20480, "compute_percent": 25}``; ``health`` is exactly what the kubelet
was sent; ``allocations`` counts the Allocate calls that included the device since the plugin
started (the kubelet reports no releases); ``registered`` is false while the kubelet is away;
``config.refused`` says why a changed config file is not in use. A plugin that idles (no GPUs with
failOnInitError false, or nothing to advertise) writes ``"resources": []`` and ``"idle": "<why>"``.

Example::

    write_state(path, state)
    read_state(path).resources[0].devices[0].healthy
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.config.values import DEFAULT_DEVICE_PLUGIN_STATE_FILE
from kgpu.deviceplugin.api import HEALTHY
from kgpu.fsio import read_text, write_atomic

STATE_VERSION = 1
DEFAULT_STATE_FILE = Path(DEFAULT_DEVICE_PLUGIN_STATE_FILE)
MAX_STATE_BYTES = 64 * 1024 * 1024
"""A node advertises at most a few thousand devices; a larger file is not the plugin's."""


class StateFileError(ValueError):
    """The file is not what the device plugin writes; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class MpsLimits:
    memory_mib: int | None
    compute_percent: int | None


@dataclass(frozen=True, slots=True)
class DeviceState:
    id: str
    gpu_uuid: str
    health: str
    """``Healthy`` or ``Unhealthy``, exactly as sent to the kubelet."""
    reason: str = ""
    replica: int | None = None
    numa_node: int | None = None
    allocations: int = 0
    mps: MpsLimits | None = None

    @property
    def healthy(self) -> bool:
        return self.health == HEALTHY


@dataclass(frozen=True, slots=True)
class ResourceState:
    name: str
    socket: str
    registered: bool
    registrations: int = 0
    devices: tuple[DeviceState, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigState:
    file: str | None = None
    reloads: int = 0
    refused: str = ""


@dataclass(frozen=True, slots=True)
class PluginState:
    resources: tuple[ResourceState, ...] = ()
    kubelet_dir: str = ""
    health_policy: str = ""
    config: ConfigState = field(default_factory=ConfigState)
    device_list_strategy: tuple[str, ...] = ()
    """How the plugin hands devices to the runtime (``envvar``, ``driver-mounts``, …): ``kgpu validate``
    judges the container runtime by it; empty when unknown."""
    nvidia_driver_root: str | None = None
    """The driver root on the host, beside the strategy."""
    idle: str | None = None
    pid: int = 0
    updated: str = ""

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resources)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": STATE_VERSION,
            "pid": self.pid,
            "updated": self.updated,
            "kubelet_dir": self.kubelet_dir,
            "health_policy": self.health_policy,
            "config": {"file": self.config.file, "reloads": self.config.reloads, "refused": self.config.refused},
            "device_list_strategy": list(self.device_list_strategy),
            "nvidia_driver_root": self.nvidia_driver_root,
        }
        if self.idle is not None:
            out["idle"] = self.idle
        out["resources"] = [
            {
                "name": r.name, "socket": r.socket, "registered": r.registered, "registrations": r.registrations,
                "devices": [_device_json(d) for d in r.devices],
            }
            for r in self.resources
        ]
        return out

    @classmethod
    def from_json(cls, raw: Any, source: str) -> PluginState:
        """The state in ``raw`` (parsed JSON); StateFileError naming ``source`` and the field otherwise."""
        if not isinstance(raw, dict):
            raise StateFileError(f"{source}: expected a JSON object with version and resources")
        if raw.get("version") != STATE_VERSION:
            raise StateFileError(f"{source}: version {str(raw.get('version'))[:20]}; this kgpu reads version "
                                 f"{STATE_VERSION}")
        strategy, driver_root = raw.get("device_list_strategy"), raw.get("nvidia_driver_root")
        try:
            config = raw.get("config") or {}
            return cls(
                resources=tuple(_resource(r) for r in raw["resources"]),
                kubelet_dir=str(raw.get("kubelet_dir", "")),
                health_policy=str(raw.get("health_policy", "")),
                config=ConfigState(_str_or_none(config.get("file")), int(config.get("reloads", 0)),
                                   str(config.get("refused", ""))),
                device_list_strategy=tuple(str(x) for x in strategy) if isinstance(strategy, list) else (),
                nvidia_driver_root=driver_root if isinstance(driver_root, str) else None,
                idle=_str_or_none(raw.get("idle")),
                pid=int(raw.get("pid", 0)),
                updated=str(raw.get("updated", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateFileError(f"{source}: missing or malformed field ({str(exc)[:200]})") from None


def _device_json(d: DeviceState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": d.id, "gpu_uuid": d.gpu_uuid, "replica": d.replica, "numa_node": d.numa_node,
        "health": d.health, "reason": d.reason, "allocations": d.allocations,
    }
    if d.mps is not None:
        out["mps"] = {"memory_mib": d.mps.memory_mib, "compute_percent": d.mps.compute_percent}
    return out


def _resource(r: Mapping[str, Any]) -> ResourceState:
    return ResourceState(
        name=str(r["name"]), socket=str(r.get("socket", "")), registered=bool(r.get("registered", False)),
        registrations=int(r.get("registrations", 0)), devices=tuple(_device(d) for d in r["devices"]),
    )


def _device(d: Mapping[str, Any]) -> DeviceState:
    mps = d.get("mps")
    return DeviceState(
        id=str(d["id"]), gpu_uuid=str(d["gpu_uuid"]), health=str(d["health"]), reason=str(d.get("reason", "")),
        replica=_int_or_none(d.get("replica")), numa_node=_int_or_none(d.get("numa_node")),
        allocations=int(d.get("allocations", 0)),
        mps=MpsLimits(_int_or_none(mps.get("memory_mib")), _int_or_none(mps.get("compute_percent")))
        if isinstance(mps, dict) else None,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def timestamp(now: float | None = None) -> str:
    """``2026-01-01T12:00:00.000Z``: the ``updated`` field's format."""
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def parse_state(text: str, source: str) -> PluginState:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        why = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise StateFileError(f"{source}: not JSON ({why})") from None
    return PluginState.from_json(raw, source)


def read_state(path: Path) -> PluginState:
    """The state in ``path``; a KgpuError (unreadable) or StateFileError (not the plugin's) otherwise."""
    return parse_state(read_text(path, limit=MAX_STATE_BYTES), str(path))


def write_state(path: Path, state: PluginState) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never half of either."""
    write_atomic(path, json.dumps(state.to_json(), indent=2) + "\n")


def remove_state(path: Path | None) -> None:
    """The file gone on a clean stop (SIGTERM: a rollout, ``helm uninstall``): a plugin that serves nothing
    leaves nothing on the node, and readers (the exporter, the DRA plugin) take a missing file as no plugin."""
    if path is not None:
        path.unlink(missing_ok=True)

