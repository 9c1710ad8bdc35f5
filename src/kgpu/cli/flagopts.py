"""Command-line options generated from the one table of flags (:mod:`kgpu.config.flags`).

A command declares which program's flags it takes; the options, their help and the command
line's parsing come from the table, so a flag is declared once::

    @takes_flags(DEVICE_PLUGIN)
    def device_plugin(ctx: typer.Context, given: Given, state_file: ... = ...) -> None:
        config = resolve_config(given, os.environ)

``given`` holds what the command line set, by NVIDIA's flag name (``None``: not given). The
command is registered with ``cls=FlagCommand``, which accepts what NVIDIA's urfave/cli accepts:
``--flag``, ``--flag=true|false`` (and Go's other boolean spellings) for booleans, Go's single-dash
long form (``-mig-strategy=mixed``), repeated or comma-separated lists; and kgpu's older
``--no-<flag>`` for a boolean.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from kgpu.cli.help import KgpuCommand
from kgpu.config.flags import BOOL_METAVAR, Flag, Program, describe, flags_of, normalize_args, option_names

F = TypeVar("F", bound=Callable[..., Any])
Given = Mapping[str, object]
"""What the command line set, by NVIDIA's flag name; a value of ``None`` means not given."""

PANEL_NVIDIA = "NVIDIA's flags (flag > environment variable > config file > default)"


def _option(flag: Flag, program: Program, panel: str | None, default: object = None) -> Any:
    """The Annotated type of one generated parameter (a string, or repeated strings for a list)."""
    metavar = BOOL_METAVAR if flag.kind == "bool" else flag.metavar
    info = typer.Option(*option_names(flag), help=describe(flag, program, default), metavar=metavar,
                        show_default=False, rich_help_panel=panel)
    if flag.kind in ("strings", "ints"):
        return Annotated[list[str] | None, info]
    return Annotated[str | None, info]


def _param(flag: Flag) -> str:
    return "flag_" + flag.name.replace("-", "_")


def takes_flags(
    program: Program, only: Sequence[str] = (), *, extra: Sequence[Flag] = (), panel: str = PANEL_NVIDIA,
    own_panel: str | None = None, defaults: Mapping[str, object] | None = None,
) -> Callable[[F], F]:
    """Give a command the table's options for ``program`` (or ``only`` some of them, plus ``extra`` rows).

    The command must have a parameter ``given``; it receives the generated options' values by flag name.
    NVIDIA's flags are listed under ``panel``, kgpu's own rows under ``own_panel`` (None: "Options").
    ``defaults`` shows another default in the help, where the command applies one of its own.
    """
    defaults = defaults or {}
    rows = (*flags_of(program, only), *extra)

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        hints = get_type_hints(func, include_extras=True)
        kept = [p.replace(annotation=hints.get(p.name, p.annotation))
                for p in signature.parameters.values() if p.name != "given"]
        generated = [
            inspect.Parameter(_param(f), inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=_option(f, program, panel if f.origin == "nvidia" else own_panel,
                                                 defaults.get(f.name)))
            for f in rows
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                  and i > 0 else p for i, p in enumerate(kept)]

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(_param(f)) for f in rows}
            return func(*args, given={k: v for k, v in given.items() if v is not None and v != []}, **kwargs)

        command.__signature__ = signature.replace(parameters=[*params, *generated])  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in (*params, *generated)}
        del command.__wrapped__  # type: ignore[attr-defined]  # the signature above is the one Typer reads
        return command  # type: ignore[return-value]

    return decorate


class FlagCommand(KgpuCommand):
    """A kgpu command that reads NVIDIA's command-line forms (see :func:`normalize_args`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        long_names = {o.lstrip("-") for p in self.params for o in getattr(p, "opts", []) if o.startswith("--")}
        bool_names = {o.lstrip("-") for p in self.params if getattr(p, "metavar", None) == BOOL_METAVAR
                      for o in getattr(p, "opts", []) if o.startswith("--")}
        return super().parse_args(ctx, normalize_args(args, long_names, bool_names))
