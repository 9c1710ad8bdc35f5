"""Durations as Go writes them (``60s``, ``1m30s``, ``250ms``), which NVIDIA's flags and file take.

Example::

    parse_duration("1m30s")          # 90.0
    parse_duration("infinite")       # math.inf (GFD's sleepInterval)
    parse_duration("90")             # 90.0: kgpu also takes plain seconds on its command line
    format_duration(90.0)            # '1m30s'
"""

from __future__ import annotations

import math
import re

from kgpu.errors import ConfigError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_PLAIN = re.compile(r"\d+(\.\d+)?")
ALLOWED = "a duration such as 60s, 1m30s, 250ms (Go's syntax)"


def go_duration(text: str) -> float | None:
    """Seconds in ``text`` if it is a Go duration (``time.ParseDuration``), else None."""
    value = text.strip()
    if value == "0":
        return 0.0
    sign = -1.0 if value.startswith("-") else 1.0
    body = value.lstrip("+-")
    parts = _PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        return None
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


def parse_duration(text: str, where: str, *, infinite: bool = False, plain_seconds: bool = True,
                   minimum: float = 0.0) -> float:
    """Seconds from ``text``; ConfigError naming ``where``, the value and what is allowed.

    ``infinite`` accepts GFD's ``infinite`` (→ ``math.inf``); ``plain_seconds`` accepts a bare number
    as seconds (kgpu's own flags; Go itself only takes ``0`` without a unit).
    """
    value = text.strip()
    if infinite and value == "infinite":
        return math.inf
    seconds = float(value) if plain_seconds and _PLAIN.fullmatch(value) else go_duration(value)
    if seconds is None:
        extra = ", or infinite" if infinite else ""
        plain = ", or plain seconds (90)" if plain_seconds else ""
        raise ConfigError(f"{where}: {text[:100]!r} is not {ALLOWED}{plain}{extra}")
    if seconds < minimum:
        raise ConfigError(f"{where}: {text[:100]!r} is less than the minimum of {minimum:g}s")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it (``0s``, ``5ns``, ``250ms``, ``1m30s``), or
    ``infinite`` (GFD's sleepInterval): what NVIDIA writes when it marshals its config, and what
    :func:`go_duration` reads back as the same value (a bare number in the file would be nanoseconds)."""
    if math.isinf(seconds):
        return "infinite"
    ns = round(seconds * 1e9)
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("\u00b5s", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` with no trailing zeros (``1500, 1000`` → ``1.5``), as Go's fmtFrac."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    return f"{whole}." + f"{frac:0{len(str(unit)) - 1}d}".rstrip("0")
