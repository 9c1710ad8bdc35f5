"""Where labels go: printed, an NFD local feature file, or (see :mod:`kgpu.labels.node`) the Node object.

NFD's ``local`` source reads every file in ``/etc/kubernetes/node-feature-discovery/features.d/``
as ``key=value`` lines; GFD writes its own file there (``gfd``), kgpu writes ``kgpu``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from kgpu.fsio import NodeFileError, describe_os_error, write_atomic

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


def write_feature_file(path: Path, labels: Mapping[str, str]) -> None:
    """Write the labels so NFD reads the old file or the new one, never a part (through a symlink, mode kept).

    The directory is created if missing (NFD's hostPath may start empty). No backup is kept: NFD reads
    every file in features.d, a backup there would be read as labels too. Failures are one-line errors.
    """
    write_atomic(path, format_lines(labels))


def remove_feature_file(path: Path) -> bool:
    """Remove the feature file (the labeler does on shutdown, as GFD, so NFD drops the labels)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise NodeFileError(describe_os_error(exc, "remove", path)) from None
    return True
