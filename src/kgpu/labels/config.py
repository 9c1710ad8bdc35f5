"""Label settings from NVIDIA's device-plugin config file (v1), flags and environment.

GFD reads the device plugin's config file; kgpu's labeler does too. Only ``flags.migStrategy``
and the ``sharing`` section matter for labels. Precedence: flag > environment > file > default.
As in NVIDIA's tools, an explicit ``rename`` on a shared resource is ignored (only
``renameByDefault`` renames, to ``<name>.shared``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kgpu.errors import ConfigError
from kgpu.labels.settings import LabelSettings, MigStrategy, ReplicatedResource, SharingStrategy

log = logging.getLogger(__name__)

MIG_STRATEGY_ENV = ("GFD_MIG_STRATEGY", "MIG_STRATEGY")
CONFIG_FILE_ENV = ("GFD_CONFIG_FILE", "CONFIG_FILE")
_ALLOWED_MIG = ", ".join(s.value for s in MigStrategy)


def parse_mig_strategy(value: str, where: str) -> MigStrategy:
    try:
        return MigStrategy(value)
    except ValueError:
        raise ConfigError(f"{where}: MIG strategy {value!r} is not one of {_ALLOWED_MIG}") from None


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _resources(section: Mapping[str, Any], where: str) -> tuple[ReplicatedResource, ...]:
    rename_by_default = section.get("renameByDefault", False)
    if not isinstance(rename_by_default, bool):
        raise ConfigError(f"{where}.renameByDefault: expected true or false, got {rename_by_default!r}")
    raw = section.get("resources")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.resources: expected a non-empty list of {{name, replicas}}, got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}.resources[{i}]"
        entry = _mapping(item, at)
        name, replicas = entry.get("name"), entry.get("replicas")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at}.name: expected a resource name such as nvidia.com/gpu, got {name!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"{at}.replicas: expected a whole number ≥ 1, got {replicas!r}")
        if entry.get("rename") and not rename_by_default:
            log.warning("ignoring rename of a shared resource, as NVIDIA's device plugin does; "
                        "use renameByDefault", extra={"field": f"{at}.rename"})
        out.append(ReplicatedResource(name=name, replicas=replicas, renamed=rename_by_default))
    return tuple(out)


def settings_from_document(doc: Any, source: str) -> LabelSettings:
    """Label settings from a parsed config file (``source`` names it in errors)."""
    top = _mapping(doc, source)
    flags = _mapping(top.get("flags"), f"{source}: flags")
    mig = flags.get("migStrategy", MigStrategy.NONE.value)
    strategy = parse_mig_strategy(str(mig), f"{source}: flags.migStrategy")
    sharing = _mapping(top.get("sharing"), f"{source}: sharing")
    # NVIDIA: the mps section, when present, is the active one; else timeSlicing.
    if sharing.get("mps") is not None:
        resources = _resources(_mapping(sharing["mps"], f"{source}: sharing.mps"), f"{source}: sharing.mps")
        return LabelSettings(strategy, SharingStrategy.MPS, resources)
    if sharing.get("timeSlicing") is not None:
        where = f"{source}: sharing.timeSlicing"
        section = _mapping(sharing["timeSlicing"], where)
        if section.get("resources"):
            return LabelSettings(strategy, SharingStrategy.TIME_SLICING, _resources(section, where))
    return LabelSettings(strategy)


def read_config_file(path: Path) -> LabelSettings:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML or JSON: {exc}") from exc
    return settings_from_document(doc, f"config file {path}")


def resolve_settings(
    config_file: Path | None,
    mig_strategy: str | None,
    environ: Mapping[str, str],
) -> LabelSettings:
    """Settings from flag values (``None`` = not given), the environment and the config file."""
    if config_file is None:
        env_file = next((environ[k] for k in CONFIG_FILE_ENV if environ.get(k)), None)
        config_file = Path(env_file) if env_file else None
    settings = read_config_file(config_file) if config_file is not None else LabelSettings()
    if mig_strategy is not None:
        chosen = parse_mig_strategy(mig_strategy, "--mig-strategy")
    else:
        env = next(((k, environ[k]) for k in MIG_STRATEGY_ENV if environ.get(k)), None)
        chosen = parse_mig_strategy(env[1], f"environment variable {env[0]}") if env else settings.mig_strategy
    return LabelSettings(chosen, settings.sharing, settings.resources)
