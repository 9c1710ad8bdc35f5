"""systemd-style configuration directories: ``*.conf`` files where ``/etc`` overrides ``/run`` overrides
``/usr/lib``.

``modules-load.d``, ``modprobe.d`` and ``sysctl.d`` all follow this rule: files are read in the
lexical order of their names, and a file in an earlier directory hides the file of the same name
in a later one (an ``/etc`` file linked to ``/dev/null`` hides the vendor's file entirely).
"""

from __future__ import annotations

import os
from pathlib import Path

from kgpu.host.paths import under

_DIR_ORDER = ("/etc", "/run", "/usr/local/lib", "/usr/lib", "/lib")


def conf_files(root: Path, name: str, suffix: str = ".conf") -> list[tuple[str, Path]]:
    """``conf_files(root, "sysctl.d")`` → ``[(node_path, real_path), ...]`` in the order they apply."""
    chosen: dict[str, tuple[str, Path]] = {}
    seen_dirs: set[str] = set()
    for base in _DIR_ORDER:
        directory = under(root, f"{base}/{name}")
        try:
            real_dir = os.path.realpath(directory)
        except OSError:
            continue
        # On merged-/usr systems /lib is a link to /usr/lib: read each directory once.
        if real_dir in seen_dirs or not directory.is_dir():
            continue
        seen_dirs.add(real_dir)
        for entry in sorted(directory.iterdir()):
            if entry.name.endswith(suffix) and entry.name not in chosen:
                chosen[entry.name] = (f"{base}/{name}/{entry.name}", entry)
    out = []
    for file_name in sorted(chosen):
        shown, real = chosen[file_name]
        if real.is_symlink() and os.readlink(real) == "/dev/null":
            continue
        out.append((shown, real))
    return out


def read_conf(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
