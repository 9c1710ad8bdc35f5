"""Where labels go: printed, an NFD local feature file, or (see :mod:`kgpu.labels.node`) the Node object.

NFD's ``local`` source reads every file in ``/etc/kubernetes/node-feature-discovery/features.d/``
as ``key=value`` lines; GFD writes its own file there (``gfd``), kgpu writes ``kgpu``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from kgpu.errors import KgpuError
from kgpu.fsio import write_atomic

DEFAULT_FEATURE_FILE = Path("/etc/kubernetes/node-feature-discovery/features.d/kgpu")


def format_lines(labels: Mapping[str, str]) -> str:
    """``key=value`` lines, sorted by key, newline-terminated (NFD's local feature file format)."""
    return "".join(f"{k}={v}\n" for k, v in sorted(labels.items()))


def format_json(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), indent=2) + "\n"


def parse_lines(text: str) -> dict[str, str]:
    """Read a feature file back (comments and blank lines skipped), e.g. to compare with new labels."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never a part.

    The directory is created if missing (NFD's hostPath may start empty); failures become one-line errors.
    """
    try:
        write_atomic(path, text, mode)
    except (FileExistsError, NotADirectoryError) as exc:
        raise KgpuError(f"cannot write labels to {path}: {exc.filename or path.parent} is not a directory") from exc
    except OSError as exc:
        raise KgpuError(f"cannot write labels to {path}: {exc.strerror or exc}; is the directory writable?") from exc


def write_feature_file(path: Path, labels: Mapping[str, str]) -> None:
    write_atomically(path, format_lines(labels))


def remove_feature_file(path: Path) -> bool:
    """Remove the feature file (the labeler does on shutdown, as GFD, so NFD drops the labels)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
