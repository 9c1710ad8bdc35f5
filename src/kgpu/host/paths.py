"""Resolve absolute node paths under a filesystem root and read small files without raising."""

from __future__ import annotations

from pathlib import Path


def under(root: Path, path: str | Path) -> Path:
    """``under(Path("/mnt/node"), "/etc/fstab")`` → ``/mnt/node/etc/fstab``."""
    return root / str(path).lstrip("/")


def read_text(root: Path, path: str | Path) -> str | None:
    """The file's text, or ``None`` when it is absent or unreadable (a fact, not an error)."""
    try:
        return under(root, path).read_text(errors="replace")
    except OSError:
        return None


def display(path: str | Path) -> str:
    """How a node path is shown in evidence: always absolute, as the admin sees it on the node."""
    text = str(path)
    return text if text.startswith("/") else "/" + text


def node_path(root: Path, real: Path) -> str:
    """Inverse of :func:`under`: ``/mnt/node/etc/fstab`` → ``/etc/fstab``."""
    try:
        return "/" + str(real.relative_to(root)).lstrip("/") if real != root else "/"
    except ValueError:
        return str(real)


def strip_comment(line: str, markers: str = "#") -> str:
    for i, ch in enumerate(line):
        if ch in markers:
            return line[:i].strip()
    return line.strip()
