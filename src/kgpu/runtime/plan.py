"""A configuration change as a plan (old text, new text, diff), and the one call that writes it.

Planners in this package are pure: they read the current files under ``--root`` (symlinks followed
as the node would, see :func:`kgpu.fsio.locate`) and return a :class:`RuntimePlan`. :func:`apply_plan`
lands it through :func:`kgpu.fsio.apply_changes`: all files or none, written through symlinks with
their mode and owner, the previous content kept as ``<file>.kgpu.bak`` and the pre-kgpu content as
``<file>.kgpu.orig`` (written once). ``unconfigure`` puts a file's ``.kgpu.orig`` back byte for byte
when what is left means the same (:func:`restore_original`).

Example::

    plan = plan_configure(ConfigureRequest(runtime="containerd"), root=Path("/"))
    print(plan.diff())        # what would change
    apply_plan(plan)          # write it
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from kgpu.fsio import (
    BACKUP_SUFFIX,
    ORIGINAL_SUFFIX,
    Applied,
    FileChange,
    Location,
    apply_changes,
    locate,
    read_text_or_none,
)

__all__ = ["BACKUP_SUFFIX", "ORIGINAL_SUFFIX", "FileChange"]


def host_path(root: Path, node_path: str | Path) -> Path:
    """Where ``node_path`` (as the node sees it, e.g. ``/etc/containerd/config.toml``) lives under ``root``."""
    return locate(root, str(node_path)).real


def read_text(path: Path, name: str | None = None) -> str | None:
    """The file's text, or None when it does not exist (bad encodings are one-line errors)."""
    return read_text_or_none(path, name)


def read_node(root: Path, node_path: str) -> tuple[Location, str | None]:
    """Where ``node_path`` lives under ``root`` (links followed) and its text (None: absent)."""
    where = locate(root, node_path)
    return where, read_text_or_none(where.real, node_path)


def original_text(change: FileChange) -> str | None:
    """The file's content before kgpu first changed it (its ``.kgpu.orig``), or None."""
    return read_text_or_none(change.backup_path(ORIGINAL_SUFFIX))


def restore_original(change: FileChange, same: Callable[[str, str], bool]) -> FileChange:
    """``change``, writing the file's ``.kgpu.orig`` byte for byte when the planned text means the same.

    ``same(planned, original)`` compares what the texts mean (parsed TOML or JSON): formatting kgpu
    could not reproduce (comments, order, spacing, a byte-order mark) comes back exactly as it was.
    """
    original = original_text(change)
    if original is None or change.new_text is None or not same(change.new_text, original):
        return change
    return replace(change, new_text=original, restore=change.backup_path(ORIGINAL_SUFFIX))


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


def apply_plan(plan: RuntimePlan) -> list[Applied]:
    """Land every changed file of ``plan``, all or nothing (see :func:`kgpu.fsio.apply_changes`)."""
    return apply_changes(plan.changes)



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
    runtime_name: str = NVIDIA_RUNTIME_NAME
    """The name the NVIDIA runtime gets in the config (``--nvidia-runtime-name``)."""
    config_version: int | None = None
    """containerd config version for a file that does not exist yet (2 or 3); an existing file keeps its own."""
