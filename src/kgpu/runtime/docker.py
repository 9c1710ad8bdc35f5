"""Docker: ``runtimes.nvidia`` in ``/etc/docker/daemon.json``, as nvidia-ctk writes it.

``{"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}``, optionally
``"default-runtime": "nvidia"`` and, for CDI, ``"features": {"cdi": true}``. Every other key is kept
in its place; the file is written with 4-space indentation like nvidia-ctk's. A file that already
says all this is left byte for byte as it is, whatever its formatting.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from kgpu.errors import ConfigError
from kgpu.runtime.checks import check_docker
from kgpu.runtime.plan import (
    ConfigureRequest,
    FileChange,
    RuntimePlan,
    original_text,
    read_node,
    restore_original,
)

DEFAULT_CONFIG = "/etc/docker/daemon.json"
DEFAULT_RUNTIME_PATH = "nvidia-container-runtime"
RESTART = "systemctl restart docker"


def _not_json(node_path: str, literal: str) -> ConfigError:
    return ConfigError(
        f"{node_path}: {literal} is not a JSON number (dockerd refuses the file); fix the file first, "
        f"nothing was changed"
    )


def _load(text: str | None, node_path: str) -> dict[str, Any]:
    """daemon.json as dockerd reads it: strict JSON (no NaN or Infinity, no number out of range)."""
    if text is None or not text.strip():
        return {}

    def constant(name: str) -> Any:
        raise _not_json(node_path, name)

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise _not_json(node_path, literal)
        return value

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{node_path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); fix the file first, nothing was changed"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{node_path}: expected a JSON object at the top level, found {type(data).__name__}")
    check_docker(data, node_path)
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=4, allow_nan=False) + "\n"


def _same(a: str, b: str) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


def _object(data: dict[str, Any], key: str, node_path: str) -> dict[str, Any]:
    value = data.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{node_path}: {key!r} is {type(value).__name__}, expected an object")
    return value


def _read(req: ConfigureRequest, root: Path) -> tuple[str, FileChange, dict[str, Any]]:
    config = req.config or DEFAULT_CONFIG
    where, old = read_node(root, config)
    return config, FileChange.of(where, old, old), _load(old, config)


def plan_configure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    config, file, before = _read(req, root)
    name = req.runtime_name
    data = json.loads(json.dumps(before))
    runtimes = _object(data, "runtimes", config)
    entry = runtimes.get(name)
    entry = dict(entry) if isinstance(entry, dict) else {}
    entry["path"] = req.runtime_path or DEFAULT_RUNTIME_PATH
    entry.setdefault("args", [])
    runtimes[name] = dict(sorted(entry.items()))
    if req.set_as_default:
        data["default-runtime"] = name
    elif data.get("default-runtime") == name:
        del data["default-runtime"]  # as nvidia-ctk: configuring without --set-as-default unsets it
    if req.cdi:
        _object(data, "features", config)["cdi"] = True
    new = file.old_text if (file.old_text is not None and data == before) else _dump(data)
    notes: tuple[str, ...] = ()
    if req.drop_in:
        notes = ("docker has no drop-in configs; --drop-in-config is ignored",)
    return RuntimePlan("docker", (replace(file, new_text=new),), RESTART, notes)


def plan_unconfigure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    config, file, before = _read(req, root)
    name = req.runtime_name
    data = json.loads(json.dumps(before))
    runtimes = data.get("runtimes")
    if isinstance(runtimes, dict):
        runtimes.pop(name, None)
        if not runtimes:
            del data["runtimes"]
    if data.get("default-runtime") == name:
        del data["default-runtime"]
    original_json = original_text(file)
    if original_json is not None:
        original = _load(original_json, config + " (its .kgpu.orig)")
        if original.get("default-runtime") != name:  # never back to a default that is gone
            _restore(data, original, "default-runtime")
        features = data.get("features")
        if isinstance(features, dict) and "cdi" in features and "cdi" not in (original.get("features") or {}):
            del features["cdi"]
            if not features and "features" not in original:
                del data["features"]
    if data == before:
        return RuntimePlan("docker", (file,), RESTART)
    change = replace(file, new_text=_dump(data) if data or original_json is not None else None)
    return RuntimePlan("docker", (restore_original(change, _same),), RESTART)


def _restore(data: dict[str, Any], original: dict[str, Any], key: str) -> None:
    if key in original:
        data[key] = original[key]
    else:
        data.pop(key, None)
