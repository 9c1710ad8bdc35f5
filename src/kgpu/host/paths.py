"""Resolve absolute node paths under a filesystem root and read small files without raising."""

from __future__ import annotations

import os
from pathlib import Path

from kgpu.errors import ConfigError
from kgpu.fsio import decode, locate, read_bytes

_KERNEL_DIRS = ("/proc/", "/sys/")


def under(root: Path, path: str | Path) -> Path:
    """``under(Path("/mnt/node"), "/etc/fstab")`` → ``/mnt/node/etc/fstab``, symlinks followed as the node would.

    An absolute link target resolves under ``root`` (as in a chroot), never on the machine kgpu runs on;
    a link that leads outside ``root`` is a one-line error.
    """
    return locate(root, str(path)).real


def named(root: Path, path: str | Path) -> Path:
    """Like :func:`under`, but the last component is not followed: to look at a symlink itself."""
    return locate(root, str(path)).named


def read_text(root: Path, path: str | Path) -> str | None:
    """The file's text, or ``None`` when it is absent or unreadable (a fact, not an error).

    Kernel files (/proc, /sys) may carry firmware's odd bytes and are read leniently; a config file
    that is not UTF-8 is a one-line ConfigError naming it (kgpu never guesses at a config's content).
    """
    shown = display(path)
    try:
        data = read_bytes(under(root, path), shown)
    except ConfigError:
        return None
    if shown.startswith(_KERNEL_DIRS):
        return data.decode("utf-8", errors="replace")
    return decode(data, shown)


def display(path: str | Path) -> str:
    """How a node path is shown in evidence: always absolute, as the admin sees it on the node."""
    text = str(path)
    return text if text.startswith("/") else "/" + text


def node_path(root: Path, real: Path) -> str:
    """Inverse of :func:`under`: ``/mnt/node/etc/fstab`` → ``/etc/fstab``."""
    for base in (root, Path(os.path.realpath(root))):
        if real == base:
            return "/"
        if real.is_relative_to(base):
            return "/" + str(real.relative_to(base)).lstrip("/")
    return str(real)


def strip_comment(line: str, markers: str = "#") -> str:
    for i, ch in enumerate(line):
        if ch in markers:
            return line[:i].strip()
    return line.strip()
