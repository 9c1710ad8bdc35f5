"""NVIDIA mig-parted's config file (``version: v1``, ``mig-configs``), validated as mig-parted validates it.

    version: v1
    mig-configs:
      all-balanced:
        - device-filter: ["0x233010DE", "0x20B210DE"]   # optional: PCI device IDs (string or list)
          devices: all                                  # or a list of GPU indexes
          mig-enabled: true
          mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}

    configs = parse_mig_config(text, "config.yaml")
    configs["all-balanced"][0].mig_devices      # {'1g.10gb': 2, '2g.20gb': 1, '3g.40gb': 1}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from kgpu.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
_PROFILE = re.compile(r"^(\d+c\.)?\d+g\.\d+gb(\+[a-z]+(\.[a-z]+)?|-[a-z]+)?$")
_DEVICE_ID = re.compile(r"^0x[0-9a-fA-F]{8}(:0x[0-9a-fA-F]{8})?$")


@dataclass(frozen=True, slots=True)
class MigConfigEntry:
    devices: tuple[int, ...] | None
    """GPU indexes, or None for ``all``."""
    mig_enabled: bool
    mig_devices: dict[str, int]
    device_filter: tuple[int, ...] = ()
    """Primary PCI device IDs (``0x20B210DE``); empty matches every GPU."""

    def matches(self, index: int, pci_device_id: int) -> bool:
        if self.device_filter and pci_device_id not in self.device_filter:
            return False
        return self.devices is None or index in self.devices


def _fail(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def _entry(raw: Any, source: str, where: str) -> MigConfigEntry:
    if not isinstance(raw, dict):
        raise _fail(source, where, "expected a mapping with devices, mig-enabled and mig-devices")
    unknown = sorted(set(raw) - {"device-filter", "devices", "mig-enabled", "mig-devices"})
    if unknown:
        raise _fail(source, where, f"unexpected field {unknown[0]!r} (allowed: device-filter, devices, "
                    "mig-enabled, mig-devices)")
    for required in ("devices", "mig-enabled"):
        if required not in raw:
            raise _fail(source, where, f"missing required field: {required}")
    devices_raw = raw["devices"]
    if devices_raw == "all":
        devices = None
    elif isinstance(devices_raw, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in devices_raw):
        devices = tuple(devices_raw)
    else:
        raise _fail(source, f"{where}.devices", f"{devices_raw!r:.60} is neither 'all' nor a list of GPU indexes")
    enabled = raw["mig-enabled"]
    if not isinstance(enabled, bool):
        raise _fail(source, f"{where}.mig-enabled", f"{enabled!r:.60} is not true or false")
    mig_devices_raw = raw.get("mig-devices") or {}
    if not isinstance(mig_devices_raw, dict):
        raise _fail(source, f"{where}.mig-devices", "expected a mapping of MIG profile to count")
    mig_devices: dict[str, int] = {}
    for profile, count in mig_devices_raw.items():
        if not isinstance(profile, str) or not _PROFILE.match(profile):
            raise _fail(source, f"{where}.mig-devices", f"{profile!r:.60} is not a MIG profile such as 1g.10gb")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 7:
            raise _fail(source, f"{where}.mig-devices.{profile}", f"{count!r:.60} is not a count from 0 to 7")
        mig_devices[profile] = count
    if mig_devices and not enabled:
        raise _fail(source, where, "mig-devices are listed but mig-enabled is false")
    filter_raw = raw.get("device-filter", [])
    filters = [filter_raw] if isinstance(filter_raw, str) else filter_raw
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
        raise _fail(source, f"{where}.device-filter", "expected a PCI device ID such as 0x20B210DE, or a list")
    ids = []
    for text in filters:
        if not _DEVICE_ID.match(text):
            raise _fail(source, f"{where}.device-filter", f"{text!r:.60} is not a PCI device ID such as 0x20B210DE")
        ids.append(int(text.split(":")[0], 16))
    return MigConfigEntry(devices, enabled, mig_devices, tuple(ids))


def parse_mig_config(text: str, source: str) -> dict[str, list[MigConfigEntry]]:
    """Every named layout of a mig-parted config, or a ConfigError naming the field and what is allowed."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict) or raw.get("version") != "v1":
        raise ConfigError(f"{source}: version must be v1 (mig-parted's format: version: v1, mig-configs: ...)")
    unknown = sorted(set(raw) - {"version", "mig-configs"})
    if unknown:
        raise ConfigError(f"{source}: unexpected field {unknown[0]!r} (allowed: version, mig-configs)")
    configs = raw.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise ConfigError(f"{source}: mig-configs: at least one named layout is required")
    out: dict[str, list[MigConfigEntry]] = {}
    for name, entries in configs.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{source}: mig-configs.{name}: at least one entry is required")
        out[str(name)] = [_entry(e, source, f"mig-configs.{name}[{i}]") for i, e in enumerate(entries)]
    return out
