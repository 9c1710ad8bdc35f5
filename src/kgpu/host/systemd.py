"""systemd units read from disk, not through ``systemctl``: enabled (a ``*.wants/`` link), masked
(a link to ``/dev/null``), running (``/run/systemd/units/invocation:<unit>``), and their ``ExecStart``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import named, under

_UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)


@dataclass(frozen=True, slots=True)
class UnitState:
    name: str
    installed: bool
    enabled: bool
    masked: bool
    running: bool
    evidence: str


def systemd_booted(root: Path) -> bool:
    """sd_booted(): systemd is PID 1 exactly when ``/run/systemd/system`` is a directory."""
    return under(root, "/run/systemd/system").is_dir()


def unit_state(root: Path, unit: str) -> UnitState:
    installed_at = masked_at = enabled_at = None
    for base in _UNIT_DIRS:
        path = named(root, f"{base}/{unit}")
        if os.path.lexists(path):
            if path.is_symlink() and os.readlink(path) == "/dev/null":
                masked_at = masked_at or f"{base}/{unit} -> /dev/null"
            else:
                installed_at = installed_at or f"{base}/{unit}"
        if enabled_at is None:
            directory = under(root, base)
            try:
                targets = [d for d in directory.iterdir() if d.name.endswith((".wants", ".requires"))]
            except OSError:
                targets = []
            for target in sorted(targets):
                if os.path.lexists(target / unit):
                    enabled_at = f"{base}/{target.name}/{unit}"
                    break
    running = os.path.lexists(named(root, f"/run/systemd/units/invocation:{unit}"))
    masked = masked_at is not None
    enabled = enabled_at is not None and not masked
    if masked:
        evidence = f"{unit}: masked ({masked_at})"
    elif enabled:
        evidence = f"{unit}: enabled ({enabled_at})" + (", running" if running else "")
    elif running:
        evidence = f"{unit}: running, not enabled at boot"
    elif installed_at:
        evidence = f"{unit}: installed ({installed_at}), not enabled"
    else:
        evidence = f"{unit}: not installed"
    return UnitState(
        unit, installed_at is not None or enabled, enabled, masked, running and not masked, evidence
    )


def unit_exec_start(root: Path, unit: str) -> str | None:
    """The effective ``ExecStart=`` of a unit: the unit file, then its ``.d/*.conf`` drop-ins (last one
    wins)."""
    files: list[Path] = []
    for base in reversed(_UNIT_DIRS):
        path = under(root, f"{base}/{unit}")
        if path.is_file():
            files = [path]
    for base in reversed(_UNIT_DIRS):
        dropins = under(root, f"{base}/{unit}.d")
        if dropins.is_dir():
            files.extend(sorted(dropins.glob("*.conf")))
    exec_start: str | None = None
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        text = text.replace("\\\n", " ")
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "ExecStart":
                exec_start = value.strip() or None
    return exec_start
