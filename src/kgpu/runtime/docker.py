"""Docker: ``runtimes.nvidia`` in ``/etc/docker/daemon.json``, as nvidia-ctk writes it.

``{"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}``, optionally
``"default-runtime": "nvidia"`` and, for CDI, ``"features": {"cdi": true}``. Every other key is kept
in its place; the file is written with 4-space indentation like nvidia-ctk's. A file that already
says all this is left byte for byte as it is, whatever its formatting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kgpu.errors import ConfigError
from kgpu.runtime.plan import NVIDIA_RUNTIME_NAME, ConfigureRequest, FileChange, RuntimePlan, host_path, read_text

DEFAULT_CONFIG = "/etc/docker/daemon.json"
DEFAULT_RUNTIME_PATH = "nvidia-container-runtime"
RESTART = "systemctl restart docker"


def _load(text: str | None, node_path: str) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{node_path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); fix the file first, nothing was changed"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{node_path}: expected a JSON object at the top level, found {type(data).__name__}")
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=4) + "\n"


def _object(data: dict[str, Any], key: str, node_path: str) -> dict[str, Any]:
    value = data.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{node_path}: {key!r} is {type(value).__name__}, expected an object")
    return value


def plan_configure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    config = req.config or DEFAULT_CONFIG
    path = host_path(root, config)
    old = read_text(path)
    before = _load(old, config)
    data = json.loads(json.dumps(before))
    runtimes = _object(data, "runtimes", config)
    entry = runtimes.get(NVIDIA_RUNTIME_NAME)
    entry = dict(entry) if isinstance(entry, dict) else {}
    entry["path"] = req.runtime_path or DEFAULT_RUNTIME_PATH
    entry.setdefault("args", [])
    runtimes[NVIDIA_RUNTIME_NAME] = dict(sorted(entry.items()))
    if req.set_as_default:
        data["default-runtime"] = NVIDIA_RUNTIME_NAME
    if req.cdi:
        _object(data, "features", config)["cdi"] = True
    new = old if (old is not None and data == before) else _dump(data)
    notes: tuple[str, ...] = ()
    if req.drop_in:
        notes = ("docker has no drop-in configs; --drop-in-config is ignored",)
    return RuntimePlan("docker", (FileChange(config, path, old, new),), RESTART, notes)


def plan_unconfigure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    config = req.config or DEFAULT_CONFIG
    path = host_path(root, config)
    old = read_text(path)
    before = _load(old, config)
    data = json.loads(json.dumps(before))
    runtimes = data.get("runtimes")
    if isinstance(runtimes, dict):
        runtimes.pop(NVIDIA_RUNTIME_NAME, None)
        if not runtimes:
            del data["runtimes"]
    if data.get("default-runtime") == NVIDIA_RUNTIME_NAME:
        del data["default-runtime"]
    new = old if data == before else _dump(data)
    return RuntimePlan("docker", (FileChange(config, path, old, new),), RESTART)
