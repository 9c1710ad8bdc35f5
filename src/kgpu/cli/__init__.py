"""The ``kgpu`` command line: one Typer app whose subcommands live in ``kgpu.cli.commands``.

Each module there exposes ``register(app)``; :data:`COMMANDS` lists every command and the modules
that register it. A command is imported and built only when it runs (``kgpu gpus`` builds no other
command: Typer reads every command's signature and evaluates its annotations to build it, which for
all of them cost a third of ``kgpu gpus``'s start-up). ``kgpu --help`` builds them all. Modules
import their heavy dependencies (grpc, prometheus, Kubernetes clients) inside the command function.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from kgpu import __version__
from kgpu.cli.flagopts import Given, takes_flags
from kgpu.cli.help import KgpuGroup, use_kgpu_help
from kgpu.cli.state import GlobalOptions
from kgpu.config.flags import DEVICE_PLUGIN, GLOBAL_FLAGS
from kgpu.errors import KgpuError
from kgpu.fsio import describe_os_error
from kgpu.gpu.backend import BACKEND_NAMES
from kgpu.log import LEVELS, setup_logging
from kgpu.options import ENVIRONMENT

COMMANDS: dict[str, tuple[str, ...]] = {
    "cdi": ("cdi",),
    "config-manager": ("config_manager",),
    "device-plugin": ("device_plugin",),
    "doctor": ("doctor",),
    "dra-plugin": ("dra_plugin",),
    "exporter": ("exporter",),
    "gpus": ("gpus",),
    "labeler": ("labels",),
    "labels": ("labels",),
    "lint": ("lint",),
    "mig-manager": ("mig_manager",),
    "mps-daemon": ("mps_daemon",),
    "mps-layout": ("mps_layout",),
    "node": ("node", "node_marks"),
    "operator": ("operator",),
    "runtime": ("runtime",),
    "scheduler-extender": ("scheduler_extender",),
    "status": ("status",),
    "validate": ("validate",),
}
"""Every ``kgpu`` command → the modules of :mod:`kgpu.cli.commands` whose ``register(app)`` declare it."""

_BUILT: dict[str, Any] = {}
"""Commands built so far in this process (``register`` adds to module-level sub-apps: once per process)."""


def build_command(name: str) -> Any:
    """The click command ``name`` as Typer builds it, from its modules' ``register``."""
    if name not in _BUILT:
        holder = typer.Typer()
        for module in COMMANDS[name]:
            importlib.import_module(f"kgpu.cli.commands.{module}").register(holder)
        use_kgpu_help(holder)
        for built_name, command in typer.main.get_group(holder).commands.items():
            _BUILT.setdefault(built_name, command)
    return _BUILT[name]


class _Commands(Mapping[str, Any]):
    """The root group's subcommands, each built on first lookup (see the module docstring)."""

    def __getitem__(self, name: str) -> Any:
        if name not in COMMANDS:
            raise KeyError(name)
        return build_command(name)

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class KgpuRoot(KgpuGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands()  # type: ignore[assignment]


app = typer.Typer(
    name="kgpu",
    cls=KgpuRoot,
    help="NVIDIA GPUs as first-class Kubernetes citizens: inspect, prepare, expose, label, export, validate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kgpu {__version__}")
        raise typer.Exit()


@app.callback()
@takes_flags(DEVICE_PLUGIN, GLOBAL_FLAGS, panel="Where the NVIDIA driver is (every command)")
def _global_options(
    ctx: typer.Context,
    given: Given,
    backend: Annotated[
        str,
        typer.Option(
            help="Where GPU facts come from: nvml (the driver), simulated (a fixture), or auto "
            "(NVML, or the simulated node when --simulate is given).",
            envvar=ENVIRONMENT["backend"],
            metavar="NAME",
        ),
    ] = "auto",
    simulate: Annotated[
        str | None,
        typer.Option(
            help="Run on a simulated node: a built-in fixture (p100, t4, a30, a100-mig, h100x8, mixed) "
            "or a YAML file. Implies --backend simulated.",
            envvar=ENVIRONMENT["simulate"],
            metavar="NAME_OR_PATH",
        ),
    ] = None,
    simulate_events: Annotated[
        Path | None,
        typer.Option(
            help="With a simulated node: a file of JSON-lines health events to follow, e.g. "
            '{"uuid": "GPU-…", "kind": "xid", "xid": 79} (kinds: xid, ecc, lost, recovered).',
            envvar=ENVIRONMENT["simulate_events"],
            metavar="FILE",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.", envvar=ENVIRONMENT["log_level"], metavar="LEVEL")
    ] = "info",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if backend not in BACKEND_NAMES:
        raise typer.BadParameter(f"{backend!r}; allowed: {', '.join(BACKEND_NAMES)}", param_hint="--backend")
    if log_level.lower() not in LEVELS:
        raise typer.BadParameter(f"{log_level!r}; allowed: {', '.join(LEVELS)}", param_hint="--log-level")
    setup_logging(log_level.lower())
    ctx.obj = GlobalOptions(
        backend=backend, simulate=simulate, simulate_events=simulate_events, log_level=log_level.lower(),
        flags=dict(given),
    )


use_kgpu_help(app)


def run(args: list[str] | None = None) -> int:
    """Run the command line (``sys.argv`` when ``args`` is None) and return its exit status.

    A :class:`KgpuError`, or an OS error no command turned into one, is printed as one line.
    """
    try:
        app(args=args, prog_name="kgpu")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except KgpuError as exc:
        print(f"kgpu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file kgpu reads or writes without its own message: still one line, no traceback
        where = Path(os.fsdecode(exc.filename)) if exc.filename is not None else None
        print(f"kgpu: error: {describe_os_error(exc, 'use', where) if where else exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(run())
