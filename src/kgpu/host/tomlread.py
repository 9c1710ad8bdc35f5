"""Small helpers for reading nested TOML/JSON tables without a chain of ``isinstance`` checks."""

from __future__ import annotations

from typing import Any


def table(data: Any, *keys: str) -> dict[str, Any]:
    """``table(cfg, "plugins", "io.containerd.grpc.v1.cri")`` → that table, or ``{}`` when any level is
    missing."""
    node = data
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
