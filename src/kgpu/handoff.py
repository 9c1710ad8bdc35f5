"""Serve a daemon from a fresh interpreter that never loaded the command line's libraries.

``kgpu device-plugin`` and ``kgpu exporter`` parse their flags with Typer (which brings click, rich,
and in recent versions pydantic) and import every subcommand's module; a daemon needs none of that
once it serves, and Python gives little of that memory back. So, once a daemon command has parsed
and checked its flags, it hands over: :func:`hand_over` replaces the process with
``python -m kgpu.handoff <the same arguments>`` — same PID, same standard streams, same environment
— which imports only the daemon's own modules and serves. Typer, rich and the other commands'
modules are gone from memory: about 12 MB of a daemon's resident memory.

The daemons served here speak plain HTTP and gRPC over unix sockets, so Python's ``ssl`` module
(OpenSSL, ~4 MB resident) is kept out of their interpreter: ``asyncio`` (which grpc imports) and
``http.client`` load it only to offer TLS, and go without it when it cannot be imported.

What the daemon needs (its parsed settings, as JSON) travels in the environment variable
``KGPU_HANDOFF``, removed before the daemon starts. The arguments stay on the command line, so
``ps`` still shows what was started. Errors in the new interpreter are reported as the command line
reports them (``kgpu: error: ...`` and the same exit code).

Only a real ``kgpu`` process hands over (:func:`kgpu.cli.main` calls :func:`allow`); a command run
in-process (tests' ``CliRunner``) serves where it is. ``KGPU_NO_HANDOFF=1`` keeps a daemon in the
command line's interpreter (to compare, or to debug).

Example (in a daemon command, after checking its flags)::

    hand_over("exporter", settings.to_json())   # returns only when handing over is not allowed
    serve(settings)
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

HANDOFF_ENV = "KGPU_HANDOFF"
DISABLE_ENV = "KGPU_NO_HANDOFF"
SERVICES = {
    "device-plugin": "kgpu.deviceplugin.service",
    "exporter": "kgpu.exporter.service",
}
"""Daemon name → module with ``serve_handed_over(settings: dict) -> None``."""

_allowed = False


def allow() -> None:
    """Let daemon commands hand over (only the real process entry point calls this)."""
    global _allowed
    _allowed = True


def hand_over(service: str, settings: Mapping[str, Any]) -> None:
    """Replace this process with a lean interpreter serving ``service`` with ``settings``.

    Returns (and the caller serves in-process) when handing over is not allowed or is disabled.
    """
    if service not in SERVICES:
        raise ValueError(f"unknown daemon {service!r}; known: {', '.join(SERVICES)}")
    if not _allowed or os.environ.get(DISABLE_ENV, "") not in ("", "0", "false"):
        return
    env = dict(os.environ)
    env[HANDOFF_ENV] = json.dumps({"service": service, "settings": dict(settings)})
    package_root = str(Path(__file__).resolve().parent.parent)
    if not _on_default_path(package_root):
        # kgpu came from a path the new interpreter would not search by itself (a wrapper's sys.path).
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), package_root) if p)
    _exec(env)


def _on_default_path(directory: str) -> bool:
    import site

    searched = {*site.getsitepackages(), site.getusersitepackages()}
    searched.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    return any(_same_dir(directory, p) for p in searched)


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _exec(env: dict[str, str]) -> NoReturn:
    import logging
    import subprocess

    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    flags_of = getattr(subprocess, "_args_from_interpreter_flags", None)  # -X, -O, -u ... of this interpreter
    flags: list[str] = flags_of() if flags_of is not None else []
    os.execve(sys.executable, [sys.executable, *flags, "-m", "kgpu.handoff", *sys.argv[1:]], env)


def main() -> int:
    """Entry point of the lean interpreter: serve the daemon described in ``KGPU_HANDOFF``."""
    raw = os.environ.pop(HANDOFF_ENV, None)
    if raw is None:
        print(
            f"kgpu: error: {__name__} serves daemons handed over by 'kgpu device-plugin' or 'kgpu exporter'; "
            "run those instead",
            file=sys.stderr,
        )
        return 2
    payload = json.loads(raw)
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]  # 'import ssl' now raises ImportError
    from kgpu.errors import KgpuError

    try:
        service = importlib.import_module(SERVICES[payload["service"]])
        service.serve_handed_over(payload["settings"])
    except KgpuError as exc:
        print(f"kgpu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
