"""Atomic file edits with a backup: the one way kgpu changes a node's configuration files.

Every writer in kgpu (``node prepare``, ``runtime configure``) plans a :class:`FileEdit` first,
shows its :meth:`FileEdit.diff`, and applies it with :func:`write_atomic`: the new content goes
to a temporary file in the same directory, is fsynced, and is renamed over the target, so a
crash leaves either the old or the new file, never half of one. The previous content is kept
next to the target as ``<file>.kgpu.bak``.

Example::

    edit = FileEdit(Path("/etc/sysctl.d/99-kubernetes.conf"), old=None, new="net.ipv4.ip_forward = 1\\n")
    print(edit.diff())
    edit.apply()
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kgpu.errors import KgpuError

BACKUP_SUFFIX = ".kgpu.bak"


class FileChangedError(KgpuError):
    """The file on disk is no longer what the plan was computed from."""


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_replace(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".kgpu.tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            with contextlib.suppress(OSError):
                os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(
    path: Path, content: str | bytes, *, backup: bool = True, mode: int | None = None
) -> Path | None:
    """Replace ``path`` with ``content`` atomically; return the backup's path if one was written.

    The target's permission bits and owner are kept (new files get ``mode``, default 0644).
    Missing parent directories are created. When ``backup`` is true and the file existed, its
    previous content is written (atomically too) to ``<file>.kgpu.bak`` before the target changes.
    """
    data = content.encode() if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    saved: Path | None = None
    if st is not None and backup:
        saved = backup_path(path)
        _write_replace(saved, path.read_bytes(), st.st_mode & 0o7777, (st.st_uid, st.st_gid))
    file_mode = (st.st_mode & 0o7777) if st is not None else (0o644 if mode is None else mode)
    _write_replace(path, data, file_mode, (st.st_uid, st.st_gid) if st is not None else None)
    return saved


@dataclass(frozen=True, slots=True)
class FileEdit:
    """A planned change to one file: ``old`` is ``None`` when the file does not exist yet.

    ``path`` is where the file really is (under any ``--root``); ``shown_as`` is the path the
    admin knows it by on the node (defaults to ``path``), used in diffs and reports.
    """

    path: Path
    old: str | None
    new: str
    reason: str = ""
    shown_as: str = ""

    @property
    def name(self) -> str:
        return self.shown_as or str(self.path)

    @property
    def changes(self) -> bool:
        return self.old != self.new

    def diff(self) -> str:
        """Unified diff from the current content to the planned one (empty when nothing changes)."""
        if not self.changes:
            return ""
        old_lines = (self.old or "").splitlines(keepends=True)
        new_lines = self.new.splitlines(keepends=True)
        fromfile = self.name if self.old is not None else "/dev/null"
        lines = difflib.unified_diff(old_lines, new_lines, fromfile=fromfile, tofile=self.name)
        return "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )

    def apply(self) -> Path | None:
        """Write the new content atomically (with a backup of the old one); return the backup path."""
        if not self.changes:
            return None
        try:
            current: str | None = self.path.read_text()
        except FileNotFoundError:
            current = None
        if current != self.old:
            raise FileChangedError(f"{self.name} changed since the plan was made; nothing written, run again")
        return write_atomic(self.path, self.new)
