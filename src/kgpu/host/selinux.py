"""SELinux: the live mode (``/sys/fs/selinux/enforce``) and the boot mode (``/etc/selinux/config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import read_text, strip_comment


@dataclass(frozen=True, slots=True)
class SELinux:
    live: str
    """``enforcing``, ``permissive`` or ``disabled`` (no selinuxfs)."""
    configured: str | None
    """``SELINUX=`` from ``/etc/selinux/config``, or ``None`` without that file."""
    config_line: str | None


def read_selinux(root: Path) -> SELinux:
    enforce = read_text(root, "/sys/fs/selinux/enforce")
    live = "disabled" if enforce is None else ("enforcing" if enforce.strip() == "1" else "permissive")
    configured = line_text = None
    for number, line in enumerate((read_text(root, "/etc/selinux/config") or "").splitlines(), 1):
        key, sep, value = strip_comment(line).partition("=")
        if sep and key.strip() == "SELINUX":
            configured, line_text = value.strip().lower(), f"/etc/selinux/config:{number}: {line.strip()}"
    return SELinux(live, configured, line_text)
