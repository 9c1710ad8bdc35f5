"""The distribution, from ``/etc/os-release`` (or ``/usr/lib/os-release``), and its family.

The family decides which commands a fix uses: ``debian`` (apt, update-initramfs),
``rhel`` (dnf/yum, dracut) or ``suse`` (zypper, dracut).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kgpu.host.paths import read_text

Family = Literal["debian", "rhel", "suse", "unknown"]

_DEBIAN = {"debian", "ubuntu", "linuxmint", "pop", "raspbian"}
_RHEL = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn", "azurelinux", "mariner"}
_SUSE = {"sles", "suse", "opensuse", "opensuse-leap", "opensuse-tumbleweed", "sle-micro", "sl-micro"}


@dataclass(frozen=True, slots=True)
class OsRelease:
    id: str
    id_like: tuple[str, ...]
    version_id: str
    pretty_name: str
    source: str

    @property
    def family(self) -> Family:
        for name in (self.id, *self.id_like):
            if name in _DEBIAN:
                return "debian"
            if name in _RHEL:
                return "rhel"
            if name in _SUSE or name.startswith("opensuse"):
                return "suse"
        return "unknown"

    @property
    def major_version(self) -> str:
        return self.version_id.split(".")[0]


def parse_os_release(text: str, source: str = "/etc/os-release") -> OsRelease:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key] = parts[0] if parts else ""
    return OsRelease(
        id=values.get("ID", "linux").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", values.get("NAME", "Linux")),
        source=source,
    )


def read_os_release(root: Path) -> OsRelease | None:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = read_text(root, path)
        if text is not None:
            return parse_os_release(text, path)
    return None
