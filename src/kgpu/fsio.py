"""The node's files: read them defensively, change them transactionally.

Reading — :func:`read_text` and :func:`read_text_or_none` decode UTF-8 (a byte-order mark is
accepted and dropped), refuse UTF-16/UTF-32 by name and any other bytes with their offset, and
bound the size; every failure is one line naming the file (:class:`~kgpu.errors.ConfigError` for
content, :class:`NodeFileError` for the operating system's refusal).

Paths under ``--root`` — :func:`check_root` refuses a root that does not exist or is no directory;
:func:`locate` resolves a node path (``/etc/containerd/config.toml``) under the root as a chroot
would: an absolute symlink target is read under the root, a link that leads outside it is refused.

Writing — :func:`apply_changes` lands a set of :class:`FileChange` all or nothing: every new file
is staged as a temporary file beside its target (same mode, owner and SELinux label, fsynced), the
previous content kept as ``<file>.kgpu.bak`` and, the first time kgpu changes a file, as
``<file>.kgpu.orig`` for good; only then are the temporary files renamed over their targets. A
failure at any step puts every file back as it was. Writes go *through* a symlink (the link stays a
link). Example::

    change = FileChange.of(locate(root, "/etc/containerd/config.toml"), old_text, new_text)
    for done in apply_changes([change]):
        print(done.describe())
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import os
import secrets
import stat
import struct
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kgpu.errors import ConfigError, KgpuError

BACKUP_SUFFIX = ".kgpu.bak"
"""The content a file had before kgpu's latest change to it (rolling: replaced on every change)."""
ORIGINAL_SUFFIX = ".kgpu.orig"
"""The content a file had before kgpu first changed it; written once, never replaced."""
BACKUP_DIR = "/var/lib/kgpu/backup"
"""Where backups go for a file whose directory a daemon reads whole (CRI-O reads every file in crio.conf.d,
so a ``99-nvidia.toml.kgpu.bak`` beside the drop-in would be read as configuration too)."""
MAX_READ_BYTES = 16 * 1024 * 1024
"""Config files, specs and fixtures are small; anything bigger is a mistake (a log, an image)."""
_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10
_FS_APPEND_FL = 0x20
_SELINUX_XATTR = "security.selinux"


class NodeFileError(KgpuError):
    """The operating system refused to change a node file; the message says why and what to do.

    (Reading a file that cannot be read is a :class:`~kgpu.errors.ConfigError`: an input problem.)
    """


# --------------------------------------------------------------------------------------------- reading

_BOMS = (  # (mark, what it is, iconv's name for it)
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)", "UTF-32BE"),
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)", "UTF-32LE"),
    (b"\xfe\xff", "UTF-16 (big-endian)", "UTF-16BE"),
    (b"\xff\xfe", "UTF-16 (little-endian)", "UTF-16LE"),
)
_UTF8_BOM = b"\xef\xbb\xbf"


def _wide_encoding(data: bytes) -> tuple[str, str] | None:
    """UTF-16/32 by its byte-order mark, or UTF-16 without one (every other byte NUL in ASCII text)."""
    for bom, name, iconv in _BOMS:
        if data.startswith(bom):
            return name, iconv
    head = data[:64]
    if len(head) >= 4 and head.count(0) * 3 >= len(head):
        return ("UTF-16 (big-endian)", "UTF-16BE") if head[0] == 0 else ("UTF-16 (little-endian)", "UTF-16LE")
    return None


def decode(data: bytes, name: str, path: Path | str | None = None) -> str:
    """``data`` as text: UTF-8, a leading byte-order mark dropped; anything else is a one-line ConfigError.

    ``name`` is how the file is shown (``config file /etc/kgpu/dp.yaml``), ``path`` the file itself.
    """
    wide = _wide_encoding(data)
    if wide is not None:
        file = path if path is not None else name
        raise ConfigError(
            f"{name}: the file is {wide[0]} text; kgpu reads UTF-8 only: convert it with "
            f"iconv -f {wide[1]} -t UTF-8 {file} > {file}.utf8 and put that in its place"
        )
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"save the file as UTF-8"
        ) from None


def _read(path: Path, shown: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{shown}: larger than {limit // (1024 * 1024)} MiB; is this the right file?")
    return data


def read_bytes(path: Path | str, name: str | None = None, limit: int = MAX_READ_BYTES) -> bytes:
    """The file's bytes; a missing or unreadable file, or one over ``limit`` bytes, is a one-line ConfigError."""
    shown = name or str(path)
    try:
        return _read(Path(path), shown, limit)
    except OSError as exc:
        raise ConfigError(describe_os_error(exc, "read", Path(path), shown)) from None


def read_text(path: Path | str, name: str | None = None, limit: int = MAX_READ_BYTES) -> str:
    """The file's text (see :func:`decode`); a missing or unreadable file is a one-line ConfigError."""
    shown = name or str(path)
    return decode(read_bytes(path, shown, limit), shown, path)


def read_text_or_none(path: Path | str, name: str | None = None, limit: int = MAX_READ_BYTES) -> str | None:
    """Like :func:`read_text`, but ``None`` when the file does not exist (a dangling link included)."""
    shown = name or str(path)
    try:
        data = _read(Path(path), shown, limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(describe_os_error(exc, "read", Path(path), shown)) from None
    return decode(data, shown, path)


# ------------------------------------------------------------------------------------------ the root


def check_root(root: Path, flag: str = "--root") -> Path:
    """``root``, made absolute, when it is an existing directory; else a one-line ConfigError (nothing is ever
    created). Absolute, because the paths found under it are absolute: a relative root would not prefix them."""
    if not root.exists():
        raise ConfigError(f"{flag} {root}: no such directory; give the node's filesystem root (default /)")
    if not root.is_dir():
        raise ConfigError(f"{flag} {root}: not a directory; give the node's filesystem root (default /)")
    return root.absolute()


def node_path_of(path: str | PurePosixPath) -> str:
    """A node path in its one spelling: absolute, normalised (``/etc//x/`` → ``/etc/x``)."""
    text = "/" + str(path).lstrip("/")
    return os.path.normpath(text).replace("//", "/")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a node path lives under a root."""

    root: Path
    node_path: str
    """As the node sees it: ``/etc/containerd/config.toml``."""
    named: Path
    """The path as named under the root, its last component not followed (it may be a symlink)."""
    real: Path
    """Every symlink followed, as the node would: the file actually read and written."""

    @property
    def through_link(self) -> bool:
        return self.named != self.real


def _escape(root: Path, node_path: str, link: Path, target: str) -> NodeFileError:
    return NodeFileError(
        f"{node_path}: {link} is a symbolic link to {target}, which leads outside {root}; kgpu does not "
        f"follow links out of --root: point the link inside the root, or run with --root where it leads"
    )


def locate(root: Path, node_path: str | PurePosixPath) -> Location:
    """Resolve ``node_path`` under ``root`` as a process chrooted there would.

    An absolute link target starts again at ``root``; ``..`` in the path given stops at the root, and
    a link whose target climbs above it is refused. Components that do not exist yet are kept as named.
    """
    node = node_path_of(node_path)
    base = Path(os.path.realpath(root))
    at_slash = base == Path("/")
    if at_slash:  # the kernel resolves exactly so; nothing can lead outside /
        parent, name = os.path.split(node)
        named = Path(os.path.realpath(parent)) / name if name else Path("/")
        return Location(root, node, named, Path(os.path.realpath(node)))
    # (name, the link it came from: (link, target) or None for the path given)
    parts: deque[tuple[str, tuple[Path, str] | None]] = deque((p, None) for p in PurePosixPath(node).parts[1:])
    current: list[str] = []
    links = 0
    while parts:
        name, origin = parts.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            if current:
                current.pop()
            elif origin is not None and not at_slash:
                raise _escape(root, node, *origin)
            continue
        candidate = base.joinpath(*current, name)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            current.append(name)
            # what does not exist yet is created as named; '..' after it is plain path arithmetic
            for rest, _ in parts:
                if rest == "..":
                    if current:
                        current.pop()
                elif rest not in ("", "."):
                    current.append(rest)
            break
        except OSError as exc:
            raise NodeFileError(describe_os_error(exc, "resolve", candidate, node)) from None
        if not stat.S_ISLNK(st.st_mode):
            current.append(name)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise NodeFileError(f"{node}: more than {_MAX_LINKS} symbolic links to follow (a loop?) at {candidate}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            current = []
        link = (candidate, target)
        parts.extendleft(reversed([(p, link) for p in PurePosixPath(target).parts if p != "/"]))
    return Location(root, node, _named(root, node), base.joinpath(*current))


def _named(root: Path, node: str) -> Path:
    """The path as named under ``root``: its directory resolved (chroot-like), its last component kept."""
    parent, name = os.path.split(node)
    if not name:
        return Path(os.path.realpath(root))
    if parent in ("", "/"):
        return Path(os.path.realpath(root)) / name
    return locate(root, parent).real / name


# ------------------------------------------------------------------------------------------ OS errors


def _flags(path: Path) -> int:
    """The file's ``chattr`` flags (0 when they cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))
        return int(struct.unpack("<i", raw[:4])[0])
    except OSError:
        return 0
    finally:
        os.close(fd)


def _mount_point(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def describe_os_error(exc: OSError, action: str, path: Path, name: str | None = None) -> str:
    """One line: which file, what the system said, and what to do about it."""
    where = str(path) if name is None else name if str(path) in name else f"{name} ({path})"
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
    directory = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = f"free space on the filesystem holding {directory} (df -h {directory}) and run again"
    elif exc.errno == errno.EROFS:
        advice = (f"{_mount_point(directory)} is mounted read-only: remount it read-write "
                  f"(mount -o remount,rw {_mount_point(directory)}) or give --root a writable copy")
    elif exc.errno == errno.EPERM:
        flagged = [p for p in (path, directory) if _flags(p) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL)]
        if flagged:
            what = "immutable" if _flags(flagged[0]) & _FS_IMMUTABLE_FL else "append-only"
            advice = (f"{flagged[0]} is {what} (lsattr -d {flagged[0]}); if the change is wanted: "
                      f"chattr -{'i' if what == 'immutable' else 'a'} {flagged[0]}, run again, chattr "
                      f"+{'i' if what == 'immutable' else 'a'} {flagged[0]}")
        else:
            advice = "the system does not allow it: run as root, or check the file's attributes (lsattr)"
    elif exc.errno == errno.EACCES:
        advice = "run as root (sudo), or give --root a copy you may write" if os.geteuid() != 0 else (
            "permission denied even to root: check the mount options and security policy (SELinux/AppArmor)")
    elif exc.errno == errno.ENOTDIR:
        advice = "a part of the path is a file, not a directory: fix the path or the node's layout"
    elif exc.errno == errno.EISDIR:
        advice = "that is a directory: name a file"
    elif exc.errno == errno.ELOOP:
        advice = "the symbolic links form a loop: fix them"
    elif exc.errno == errno.ENOENT:
        advice = "check the path"
    elif exc.errno == errno.EIO:
        advice = "the disk reported an I/O error: check it (dmesg) before writing anything else"
    else:
        advice = "fix the cause and run again"
    return f"cannot {action} {where}: {cause}; {advice}"


# ------------------------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class FileChange:
    """One node file a plan changes: its text before and after (``None``: absent / to be removed)."""

    node_path: str
    """The path as the node sees it, e.g. ``/etc/containerd/conf.d/99-nvidia.toml``."""
    path: Path
    """The file actually read and written: the node path under ``--root``, symlinks followed."""
    old_text: str | None
    new_text: str | None
    named: Path | None = None
    """The path as named under ``--root`` when it is a symlink to ``path`` (backups go beside it)."""
    backup: bool = True
    """Keep ``.kgpu.bak`` and ``.kgpu.orig`` (not for files whose directory a daemon reads whole)."""
    backup_dir: Path | None = None
    """Where the backups go instead of beside the file (e.g. CRI-O reads every file in crio.conf.d)."""
    restore: Path | None = None
    """Write this file's exact bytes instead of ``new_text`` (the ``.kgpu.orig`` that unconfigure restores)."""
    mode: int = 0o644
    """Mode of a file that does not exist yet (an existing file keeps its own)."""

    @classmethod
    def of(cls, where: Location, old_text: str | None, new_text: str | None, *, backup: bool = True,
           backup_dir: Path | None = None, restore: Path | None = None, mode: int = 0o644) -> FileChange:
        """The change of the file at ``where`` (read through its links) from ``old_text`` to ``new_text``."""
        return cls(where.node_path, where.real, old_text, new_text,
                   named=where.named if where.through_link else None, backup=backup, backup_dir=backup_dir,
                   restore=restore, mode=mode)

    @property
    def shown(self) -> Path:
        """The path as named (what the admin recognises)."""
        return self.named or self.path

    @property
    def changed(self) -> bool:
        return self.old_text != self.new_text

    @property
    def action(self) -> str:
        if not self.changed:
            return "unchanged"
        if self.old_text is None:
            return "create"
        if self.new_text is None:
            return "remove"
        return "update"

    def backup_path(self, suffix: str) -> Path:
        base = self.shown
        return (self.backup_dir or base.parent) / (base.name + suffix)

    def diff(self) -> str:
        """A unified diff, ``/dev/null`` standing for a file that does not exist."""
        if not self.changed:
            return ""
        old = (self.old_text or "").splitlines(keepends=True)
        new = (self.new_text or "").splitlines(keepends=True)
        lines = difflib.unified_diff(
            old,
            new,
            fromfile="/dev/null" if self.old_text is None else f"a{self.node_path}",
            tofile="/dev/null" if self.new_text is None else f"b{self.node_path}",
        )
        out = []
        for line in lines:
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Applied:
    """A change that landed: what was written where, and where the previous content is kept."""

    change: FileChange
    backup: Path | None = None
    original: Path | None = None
    """Set when this change wrote ``.kgpu.orig`` (the first time kgpu changed the file)."""

    def describe(self) -> str:
        c = self.change
        where = f"{c.shown} → {c.path}" if c.named is not None else str(c.path)
        line = f"{c.action}d {where}"
        kept = []
        if self.backup is not None:
            kept.append(f"previous content in {self.backup}")
        if self.original is not None:
            kept.append(f"original kept in {self.original}")
        elif c.restore is not None:
            kept.append(f"restored from {c.restore}")
        return line + (f" ({'; '.join(kept)})" if kept else "")


@dataclass(slots=True)
class _Write:
    dest: Path
    data: bytes | None
    """None: remove ``dest``."""
    like: os.stat_result | None
    """Take mode and owner from this (the file replaced); None: ``mode``, and the caller as owner."""
    like_path: Path | None
    """Take the SELinux label from this file."""
    mode: int
    shown: str
    tmp: Path | None = None
    undo: Path | None = None
    """A second name for what ``dest`` was, renamed back on rollback."""
    done: bool = False


@dataclass(slots=True)
class _Transaction:
    writes: list[_Write] = field(default_factory=list)
    made_dirs: list[Path] = field(default_factory=list)

    def run(self) -> None:
        """Stage every write (nothing visible changes), then rename them all; on failure put all back."""
        undo = len(self.writes) > 1  # a single rename either happens or not: nothing to put back
        try:
            for w in self.writes:
                self._stage(w, undo)
            self._commit()
        except BaseException as exc:
            failed = self._rollback()
            if not isinstance(exc, NodeFileError):
                raise
            landed = any(w.done for w in self.writes)
            tail = "every file was put back as it was" if landed else "nothing was changed"
            if failed:
                tail = f"putting back failed for {', '.join(failed)}: the previous content is in *{BACKUP_SUFFIX}"
            raise NodeFileError(f"{exc}; {tail}") from None
        self._cleanup()

    # --- staging ---
    def _mkdirs(self, directory: Path, shown: str) -> None:
        missing = []
        p = directory
        while not os.path.lexists(p):
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o755)
            except OSError as exc:
                raise NodeFileError(describe_os_error(exc, "create directory", d) + f" (for {shown})") from None
            self.made_dirs.append(d)

    def _stage(self, w: _Write, undo: bool) -> None:
        self._mkdirs(w.dest.parent, w.shown)
        try:
            if undo and os.path.lexists(w.dest):
                w.undo = self._keep(w.dest)
            if w.data is not None:
                w.tmp = self._temp(w)
        except OSError as exc:
            raise NodeFileError(describe_os_error(exc, "write", w.dest, w.shown)) from None

    def _keep(self, dest: Path) -> Path:
        """A second name for the current file, so a rollback puts the very same inode back."""
        for _ in range(100):
            undo = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.kgpu-undo"
            try:
                os.link(dest, undo, follow_symlinks=False)
                return undo
            except FileExistsError:
                continue
            except OSError as exc:
                return self._copy_instead(dest, undo, exc)
        raise NodeFileError(f"cannot keep a second name for {dest}: 100 names taken; remove {dest.parent}/.*.kgpu-undo")

    @staticmethod
    def _copy_instead(dest: Path, undo: Path, exc: OSError) -> Path:
        """When ``dest`` cannot get a hard link (a filesystem without them), keep a copy instead."""
        # EPERM also stands for an immutable or append-only file: say so rather than copy it
        if exc.errno == errno.EPERM and _flags(dest) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
            raise exc
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise exc
        st = os.lstat(dest)
        with open(dest, "rb") as src:
            _write_file(undo, src.read(), st, dest, st.st_mode & 0o7777)
        return undo

    def _temp(self, w: _Write) -> Path:
        assert w.data is not None
        fd, name = tempfile.mkstemp(prefix=f".{w.dest.name}.", suffix=".kgpu-new", dir=w.dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            mode = (w.like.st_mode & 0o7777) if w.like is not None else w.mode
            _write_file(tmp, w.data, w.like, w.like_path, mode)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    # --- commit: renames and unlinks only ---
    def _commit(self) -> None:
        for w in self.writes:
            try:
                if w.data is None:
                    os.unlink(w.dest)
                else:
                    assert w.tmp is not None
                    os.replace(w.tmp, w.dest)
                    w.tmp = None
            except OSError as exc:
                raise NodeFileError(describe_os_error(exc, "write", w.dest, w.shown)) from None
            w.done = True
        for directory in dict.fromkeys(w.dest.parent for w in self.writes):
            _fsync_dir(directory)

    def _rollback(self) -> list[str]:
        """Put every file back; returns those that could not be."""
        failed = []
        for w in reversed(self.writes):
            if not w.done:
                continue
            try:
                if w.undo is not None:
                    os.replace(w.undo, w.dest)
                    w.undo = None
                else:
                    os.unlink(w.dest)
            except OSError as exc:
                failed.append(f"{w.dest} ({exc.strerror})")
        self._cleanup()
        for d in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        return failed

    def _cleanup(self) -> None:
        for w in self.writes:
            for p in (w.tmp, w.undo):
                if p is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(p)
            w.tmp = w.undo = None


def _write_file(path: Path, data: bytes, like: os.stat_result | None, like_path: Path | None, mode: int) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fchmod(f.fileno(), mode)
        if like is not None:
            st = os.fstat(f.fileno())
            if (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
                os.fchown(f.fileno(), like.st_uid, like.st_gid)
                os.fchmod(f.fileno(), mode)  # chown clears set-id bits
        if like_path is not None:
            with contextlib.suppress(OSError):
                os.setxattr(f.fileno(), _SELINUX_XATTR, os.getxattr(like_path, _SELINUX_XATTR))
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the renames are done
    finally:
        os.close(fd)


def _current(change: FileChange) -> tuple[bytes | None, os.stat_result | None]:
    try:
        st = os.stat(change.path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise NodeFileError(describe_os_error(exc, "read", change.path, change.node_path)) from None
    try:
        return read_bytes(change.path, change.node_path), st
    except ConfigError as exc:
        raise NodeFileError(str(exc)) from None


def apply_changes(changes: Sequence[FileChange]) -> list[Applied]:
    """Land every changed file of ``changes``, all or nothing; returns what landed, in order.

    A file whose content on disk no longer matches what the plan was made from is refused (someone
    edited it in between): plan again rather than overwrite their change. Any failure leaves every
    file as it was and raises one :class:`NodeFileError` line saying which file, why and what to do.
    """
    try:
        txn, applied = _prepare(changes)
    except NodeFileError as exc:
        raise NodeFileError(f"{exc}; nothing was changed") from None
    if txn.writes:
        txn.run()
    return applied


def _prepare(changes: Sequence[FileChange]) -> tuple[_Transaction, list[Applied]]:
    txn = _Transaction()
    applied: list[Applied] = []
    for change in (c for c in changes if c.changed):
        data, st = _current(change)
        if (decode(data, change.node_path) if data is not None else None) != change.old_text:
            raise NodeFileError(f"{change.node_path} changed since it was read: plan again (run the command again)")
        backup = original = None
        if change.backup and data is not None:
            original = change.backup_path(ORIGINAL_SUFFIX)
            if os.path.lexists(original):
                original = None
            else:
                txn.writes.append(_Write(original, data, st, change.path, 0o600, str(original)))
            backup = change.backup_path(BACKUP_SUFFIX)
            txn.writes.append(_Write(backup, data, st, change.path, 0o600, str(backup)))
        new: bytes | None = None
        if change.restore is not None and change.new_text is not None:
            new = read_bytes(change.restore)
            if decode(new, str(change.restore)) != change.new_text:
                raise NodeFileError(f"{change.restore} changed since it was read: plan again (run the command again)")
        elif change.new_text is not None:
            new = change.new_text.encode("utf-8")
        txn.writes.append(_Write(change.path, new, st, change.path if st else None, change.mode, change.node_path))
        applied.append(Applied(change, backup, original))
    return txn, applied


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace a file kgpu owns (a state or status file) with ``text``: temp file, fsync, rename.

    Through a symlink, keeping an existing file's mode and owner, no backups; an OS error is one
    :class:`NodeFileError` line.
    """
    real = Path(os.path.realpath(path))
    try:
        st: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise NodeFileError(describe_os_error(exc, "write", real, str(path)) + "; nothing was changed") from None
    _Transaction([_Write(real, text.encode("utf-8"), st, real if st else None, mode, str(path))]).run()
