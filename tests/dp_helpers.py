"""Givens shared by the device-plugin and MPS decision tests: a simulated node and a resolved config."""

from __future__ import annotations

from pathlib import Path

from kgpu.config import PluginConfig
from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.daemon import node_resources
from kgpu.deviceplugin.resources import NodeResources
from kgpu.gpu.backend import open_backend
from kgpu.gpu.model import Inventory

EMPTY_HOST = Path("/nonexistent-host-root")
"""A host root with no sysfs or /dev: NUMA comes from the inventory, no device files exist."""


def node(name: str) -> Inventory:
    """The inventory of a built-in simulated node (p100, t4, a30, a100-mig, h100x8, mixed)."""
    backend = open_backend(simulate=name)
    try:
        return backend.inventory()
    finally:
        backend.close()


def plugin_config(directory: Path | None = None, text: str | None = None, **flags: object) -> PluginConfig:
    """The config the plugin resolves from ``text`` (written as a config file) and NVIDIA-named flags."""
    path = None
    if text is not None:
        assert directory is not None
        path = directory / "config.yaml"
        path.write_text(text)
    return resolve_config({k.replace("_", "-"): v for k, v in flags.items()}, {}, path)


def build_logic(inventory: Inventory, config: PluginConfig, host_root: Path = EMPTY_HOST) -> NodeResources:
    """The plugin's decisions for ``inventory``, with the host facts read under ``host_root`` (as it starts)."""
    return node_resources(inventory, config, host_root)
