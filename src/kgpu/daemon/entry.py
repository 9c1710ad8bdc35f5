"""A daemon's own entry point: ``kgpu-device-plugin``, ``kgpu-exporter`` (``python -m kgpu.deviceplugin``…).

``kgpu device-plugin`` runs inside kgpu's command line, which Typer builds: Typer, click, every
option's pydantic TypeAdapter (Typer validates parameters with pydantic) and kgpu's help layout stay
in the daemon's memory for its lifetime — about 11 MB of the exporter's resident memory on a 1-GPU
node (the exporter needs no pydantic otherwise), 2 MB of the plugin's (which reads its config file
with pydantic anyway), and half a second of its start. The chart runs these entry points instead.

The command line here is generated from the same rows of :mod:`kgpu.config.flags` as the command's
(names, aliases, NVIDIA's single-dash and boolean forms, help), and what it parsed goes to the same
function the command calls (``run(options, given)``), so flags, environment variables, defaults,
checks and error messages are the same by construction. kgpu's global options (``--backend``,
``--simulate``, ``--simulate-events``, ``--log-level``) come from their environment variables
(``KGPU_SIMULATE``…), as a pod sets them; NVIDIA's driver-root flags are among the rows.

Example (``kgpu.deviceplugin.daemon``)::

    def main() -> None:
        run_entry("kgpu-device-plugin", flags_of(DEVICE_PLUGIN), run, "Serve the node's GPUs to the kubelet.")
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kgpu import __version__
from kgpu.config.flags import BOOL_METAVAR, Flag, Program, describe, normalize_args, option_names
from kgpu.errors import KgpuError
from kgpu.fsio import describe_os_error
from kgpu.log import setup_logging
from kgpu.options import ENVIRONMENT, GlobalOptions

Run = Callable[[GlobalOptions, Mapping[str, object]], None]


class _Help(argparse.HelpFormatter):
    """argparse's layout, but a path or name is never split at a hyphen (/run/kgpu/device-plugin/…)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False)


def build_parser(prog: str, program: Program, rows: Sequence[Flag], description: str) -> argparse.ArgumentParser:
    """argparse options for ``rows``; a value is kept as given (a string, or a list for a repeated list flag)."""
    variables = ", ".join(f"{v} (kgpu --{k.replace('_', '-')})" for k, v in ENVIRONMENT.items())
    parser = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s [OPTIONS]", description=description, allow_abbrev=False, formatter_class=_Help,
        epilog=f"kgpu's global options are read from the environment: {variables}.",
    )
    parser.add_argument("--version", action="version", version=f"kgpu {__version__}")
    for row in rows:
        listed = row.kind in ("strings", "ints")
        parser.add_argument(*option_names(row), dest=row.name, action="append" if listed else "store",
                            metavar=BOOL_METAVAR if row.kind == "bool" else row.metavar,
                            help=describe(row, program).replace("%", "%%"))
    return parser


def parse(prog: str, program: Program, rows: Sequence[Flag], description: str,
          args: Sequence[str]) -> dict[str, object]:
    """What the command line set, by flag name (the ``given`` of :func:`kgpu.cli.flagopts.takes_flags`).
    Exits 2 with argparse's usage message for an unknown option or a missing value."""
    long_names = {n for row in rows for n in row.names if len(n) > 1}
    bool_names = {n for row in rows if row.kind == "bool" for n in row.names if len(n) > 1}
    parsed = vars(build_parser(prog, program, rows, description).parse_args(
        normalize_args(args, long_names, bool_names)))
    return {row.name: parsed[row.name] for row in rows if parsed.get(row.name) not in (None, [])}


def run_entry(prog: str, program: Program, rows: Sequence[Flag], run: Run, description: str,
              args: Sequence[str] | None = None) -> None:
    """Parse, set up logging, run; errors as the command line reports them (one line, its exit status)."""
    given = parse(prog, program, rows, description, sys.argv[1:] if args is None else args)
    try:
        options = GlobalOptions.from_environ(os.environ)  # NVIDIA's driver-root flags are among ``given``
        setup_logging(options.log_level)
        run(options, given)
    except KgpuError as exc:
        print(f"kgpu: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file without its own message: still one line, no traceback (as kgpu.cli.run)
        where = Path(os.fsdecode(exc.filename)) if exc.filename is not None else None
        print(f"kgpu: error: {describe_os_error(exc, 'use', where) if where else exc}", file=sys.stderr)
        sys.exit(1)
