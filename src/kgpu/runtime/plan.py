"""A configuration change as a plan (old text, new text, diff) and the one place that writes it.

Planners in this package are pure: they read the current files and return a :class:`RuntimePlan`.
:func:`apply_plan` is the only code that touches the disk: for every changed file it keeps the
previous content as ``<file>.kgpu.bak``, writes a temporary file in the same directory, fsyncs it
and renames it over the target, so a crash leaves either the old or the new file, never half of one.

Example::

    plan = plan_configure(ConfigureRequest(runtime="containerd"), root=Path("/"))
    print(plan.diff())        # what would change
    apply_plan(plan)          # write it
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from kgpu.fsio import write_atomic

BACKUP_SUFFIX = ".kgpu.bak"


def host_path(root: Path, node_path: str | Path) -> Path:
    """Where ``node_path`` (as the node sees it, e.g. ``/etc/containerd/config.toml``) lives under ``root``."""
    p = Path(node_path)
    return root / p.relative_to("/") if p.is_absolute() else root / p


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file a plan touches: its text before and after (``None``: absent / to be removed)."""

    node_path: str
    """The path as the node sees it, e.g. ``/etc/containerd/conf.d/99-nvidia.toml``."""
    path: Path
    """The same path under ``--root``: what is actually read and written."""
    old_text: str | None
    new_text: str | None

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
class RuntimePlan:
    """Everything ``kgpu runtime configure|unconfigure`` would do to one container runtime."""

    runtime: str
    changes: tuple[FileChange, ...]
    restart_command: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.changes)

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def apply_plan(plan: RuntimePlan) -> list[FileChange]:
    """Write every changed file of ``plan`` atomically, with a backup; returns the changes written.

    A file whose content on disk no longer matches what the plan was made from is refused
    (someone edited it in between): plan again rather than overwrite their change.
    """
    written: list[FileChange] = []
    for change in plan.changes:
        if not change.changed:
            continue
        if read_text(change.path) != change.old_text:
            from kgpu.errors import KgpuError

            raise KgpuError(f"{change.node_path} changed since it was read; nothing written to it, run again")
        if change.old_text is not None:
            write_atomic(change.path.with_name(change.path.name + BACKUP_SUFFIX), change.old_text,
                         mode=_mode_of(change.path))
        if change.new_text is None:
            change.path.unlink()
        else:
            write_atomic(change.path, change.new_text, mode=_mode_of(change.path))
        written.append(change)
    return written


def _mode_of(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o644



RUNTIMES = ("containerd", "docker", "crio")
NVIDIA_RUNTIME_NAME = "nvidia"
NVIDIA_RUNTIME_PATH = "/usr/bin/nvidia-container-runtime"
"""What nvidia-ctk writes for containerd and CRI-O; docker gets the bare name, resolved on its PATH."""


@dataclass(frozen=True, slots=True)
class ConfigureRequest:
    """What the admin asked ``kgpu runtime configure|unconfigure`` for. Paths are node paths."""

    runtime: str
    config: str | None = None
    """Main config file; None: the runtime's standard path (or k3s/RKE2's template when detected)."""
    drop_in: str | None = None
    """Drop-in file (containerd, CRI-O); None: the standard one."""
    no_drop_in: bool = False
    set_as_default: bool = False
    cdi: bool = False
    driver_root: str | None = None
    """Driver root to record in the toolkit's config (``nvidia-container-cli.root``) when not ``/``."""
    runtime_path: str | None = None
    config_version: int | None = None
    """containerd config version for a file that does not exist yet (2 or 3); an existing file keeps its own."""
