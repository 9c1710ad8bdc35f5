"""Kernel parameters: their live values (``/proc/sys``) and what boot applies (``sysctl.d``,
``/etc/sysctl.conf``)."""

from __future__ import annotations

import os
from pathlib import Path

from kgpu.host.confdirs import conf_files, read_conf
from kgpu.host.modules import Setting
from kgpu.host.paths import read_text, under


def normalize_key(key: str) -> str:
    """``net/ipv4/ip_forward`` and ``net.ipv4.ip_forward`` name the same parameter."""
    return key.strip().replace("/", ".")


def read_live_sysctl(root: Path, key: str) -> str | None:
    """The value under ``/proc/sys`` (``None`` when the parameter does not exist, e.g. a module not
    loaded)."""
    text = read_text(root, "/proc/sys/" + normalize_key(key).replace(".", "/"))
    return None if text is None else text.strip()


def _parse(text: str, shown: str, out: dict[str, Setting]) -> None:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = normalize_key(key.lstrip("-"))
        if "*" in key or "?" in key:
            continue
        out[key] = Setting(value.strip(), f"{shown}:{number}")


def read_persisted_sysctls(root: Path) -> dict[str, Setting]:
    """The value each parameter gets at boot: the last assignment wins, in the order ``sysctl --system``
    applies
    files (``sysctl.d`` directories by file name, then ``/etc/sysctl.conf``)."""
    out: dict[str, Setting] = {}
    read_real: set[str] = set()
    for shown, real in conf_files(root, "sysctl.d"):
        read_real.add(os.path.realpath(real))
        _parse(read_conf(real), shown, out)
    main = under(root, "/etc/sysctl.conf")
    if os.path.realpath(main) not in read_real:
        _parse(read_conf(main), "/etc/sysctl.conf", out)
    return out
