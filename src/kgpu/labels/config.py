"""Label settings from the device plugin's configuration: the same file, flags and env vars.

GFD reads NVIDIA's device-plugin config; kgpu's labeler reads it through the one resolver,
:func:`kgpu.config.resolve_config` with gpu-feature-discovery's flags and variables
(``GFD_MIG_STRATEGY`` before ``MIG_STRATEGY``, ``GFD_CONFIG_FILE`` before ``CONFIG_FILE``), so the
labels describe exactly what kgpu's plugin advertises.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kgpu.config import GFD, PluginConfig
from kgpu.config.file import parse_config_document
from kgpu.config.labels import LabelSettings, settings_from_plugin_config
from kgpu.config.names import check_sharing_names
from kgpu.config.resolve import build_config, resolve_config
from kgpu.config.resolve import resolve_settings as resolve_flag_settings
from kgpu.gpu.model import Inventory

__all__ = ["label_config", "node_settings", "resolve_settings", "settings_from_document"]


def node_settings(config: PluginConfig, inventory: Inventory) -> LabelSettings:
    """:class:`LabelSettings` for this node, refusing (as the device plugin does) a sharing entry that
    names no resource the node advertises: labels never describe sharing the plugin does not do."""
    check_sharing_names(config, inventory)
    return settings_from_plugin_config(config)


def label_config(
    given: Mapping[str, object], environ: Mapping[str, str], config_file: Path | None = None
) -> PluginConfig:
    """The configuration as the labeler resolves it (flag > environment > file > default)."""
    return resolve_config(given, environ, config_file, program=GFD)


def resolve_settings(
    config_file: Path | None,
    mig_strategy: str | None,
    environ: Mapping[str, str],
) -> LabelSettings:
    """Settings from the flags given (``None`` = not given), the environment and the config file.

    Raises :class:`kgpu.errors.ConfigError` naming the file, key, value and allowed values.
    """
    given: dict[str, object] = {"mig-strategy": mig_strategy}
    return settings_from_plugin_config(label_config(given, environ, config_file))


def settings_from_document(doc: object, source: str) -> LabelSettings:
    """Settings from an already-parsed config document (e.g. a ConfigMap's ``config.yaml``), validated
    by the same schema; errors name ``source``. Flags and env vars play no part."""
    spec = parse_config_document(doc, source)
    settings = resolve_flag_settings(GFD, {}, {}, spec, source)
    return settings_from_plugin_config(build_config(spec, settings, source))
