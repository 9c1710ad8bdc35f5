"""Swap: areas in use (``/proc/swaps``) and swap entries that come back at boot (``/etc/fstab``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import read_text


@dataclass(frozen=True, slots=True)
class SwapArea:
    """A line of ``/proc/swaps``: ``/swap.img  file  4194300  0  -2``."""

    filename: str
    kind: str
    size_kib: int
    used_kib: int
    priority: int
    line: str


@dataclass(frozen=True, slots=True)
class FstabEntry:
    """A non-comment line of ``/etc/fstab`` (``line_no`` counts from 1; ``text`` is the line as written)."""

    line_no: int
    text: str
    spec: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def is_active_swap(self) -> bool:
        """A swap entry ``swapon -a`` would enable at boot (``noauto`` ones are not)."""
        return self.fstype == "swap" and "noauto" not in self.options


def _unescape(field: str) -> str:
    # fstab and /proc/swaps octal-escape spaces and tabs: "/swap\040file".
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def read_active_swaps(root: Path) -> list[SwapArea] | None:
    """Active swap areas; ``None`` when ``/proc/swaps`` cannot be read."""
    text = read_text(root, "/proc/swaps")
    if text is None:
        return None
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        try:
            out.append(
                SwapArea(
                    _unescape(fields[0]),
                    fields[1],
                    int(fields[2]),
                    int(fields[3]),
                    int(fields[4]),
                    line.strip(),
                )
            )
        except ValueError:
            continue
    return out


def read_fstab(root: Path) -> list[FstabEntry]:
    text = read_text(root, "/etc/fstab") or ""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < 3:
            continue
        options = tuple(fields[3].split(",")) if len(fields) > 3 else ("defaults",)
        out.append(FstabEntry(number, line, _unescape(fields[0]), _unescape(fields[1]), fields[2], options))
    return out
