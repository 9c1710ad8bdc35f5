"""``--help`` that fits any terminal: option names whole, values named, prose wrapped at word boundaries.

Typer's own help is a table that shrinks every column to fit: at 80 columns it cut option names
(``--device-list-strat…``) so they could not be copied, and showed Python types (``<str>``,
``<list[str]>``) where a value's name belongs. kgpu renders help as click's classic layout does
instead — names and value on the left, the explanation on the right, or below when the names are
long — so nothing is ever cut. Every kgpu command gets it through :func:`use_kgpu_help`, including
commands and options added later (their options need no metavar: one is derived from the name).

A docstring paragraph whose lines are all indented (examples) is printed as written; every other
paragraph is re-flowed to the width, so a sentence is never broken mid-way by the source's line ends.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

MAX_WIDTH = 100
"""Wider terminals still get lines of at most this length: long lines are hard to read."""
NAME_COLUMN_MAX = 30
"""Names longer than this go on their own line, their help below (as click does)."""
_INDENT = 2
_GAP = 2


def use_kgpu_help(app: typer.Typer) -> None:
    """Give every command and group registered under ``app`` (recursively) kgpu's help layout."""
    if _unset(app.info.cls, TyperGroup):
        app.info.cls = KgpuGroup
    for command in app.registered_commands:
        if _unset(command.cls, TyperCommand):
            command.cls = KgpuCommand
    for group in app.registered_groups:
        if _unset(group.cls, TyperGroup):
            group.cls = KgpuGroup
        if group.typer_instance is not None:
            use_kgpu_help(group.typer_instance)


def _unset(value: Any, typer_default: type) -> bool:
    """No class chosen: None, Typer's placeholder, or Typer's own class (``app.command()`` fills it in)."""
    return value is None or value is typer_default or isinstance(value, DefaultPlaceholder)


class KgpuCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return usage_pieces(self, ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(render_help(self, ctx, help_width()))


class KgpuGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Typer 0.29, with rich installed, prints nothing for the error no_args_is_help raises: `kgpu` or
        # `kgpu node` alone exited 2 in silence. The help goes where click puts it: stderr, exit 2.
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help(), err=True)
            ctx.exit(2)
        result: list[str] = super().parse_args(ctx, args)
        return result

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return usage_pieces(self, ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(render_help(self, ctx, help_width()))


def help_width() -> int:
    """The terminal's width (``COLUMNS`` wins; 80 in a pipe), at most :data:`MAX_WIDTH`."""
    return max(40, min(shutil.get_terminal_size((80, 24)).columns, MAX_WIDTH))


def _name_values(params: Iterable[Any]) -> None:
    """Name the value of every option that takes one and has no metavar: ``--log-level LOG_LEVEL``.

    Without it, Typer shows the Python type (``<str>``), which tells an admin nothing.
    """
    for param in params:
        if param.param_type_name == "option" and not _takes_no_value(param) and not param.metavar:
            param.metavar = (param.name or "value").upper()


def _takes_no_value(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False) or getattr(param, "count", False))


def value_name(param: Any) -> str:
    """What the help shows for a parameter's value: its metavar, or its name in capitals."""
    name = str(param.metavar or (param.name or "value").upper())
    if param.param_type_name == "argument" and param.nargs != 1 and not name.endswith(("…", "...")):
        name += "..."
    return name


def usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = value_name(param)
            pieces.append(name if param.required else f"[{name}]")
    if isinstance(command, TyperGroup):
        pieces.append("COMMAND [ARGS]...")
    return pieces


def option_names(param: Any) -> str:
    """``-o, --output FORMAT`` or ``--pass-device-specs / --no-pass-device-specs``."""

    def joined(opts: Sequence[str]) -> str:
        return ", ".join(sorted(opts, key=lambda o: (o.startswith("--"), o)))

    names = joined(param.opts)
    if param.secondary_opts:
        names += " / " + joined(param.secondary_opts)
    if not _takes_no_value(param):
        names += " " + value_name(param)
    return names


def render_help(command: Any, ctx: Any, width: int) -> str:
    """The whole ``--help`` text of ``command`` at ``width`` columns."""
    lines: list[str] = []
    usage = " ".join([ctx.command_path, *usage_pieces(command, ctx)])
    lines += textwrap.wrap(usage, width, initial_indent="Usage: ", subsequent_indent=" " * 7,
                           break_on_hyphens=False, break_long_words=False)
    description = inspect.cleandoc(command.help or "").partition("\f")[0]
    if description:
        lines.append("")
        lines += _paragraphs(description, width, indent=_INDENT)
    for title, rows in _sections(command, ctx):
        lines += ["", f"{title}:"]
        lines += _two_columns(rows, width)
    return "\n".join(lines) + "\n"


def _sections(command: Any, ctx: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """Arguments, Options, then each named panel in first-seen order; a group's commands last."""
    panels: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        is_argument = param.param_type_name == "argument"
        title = getattr(param, "rich_help_panel", None) or ("Arguments" if is_argument else "Options")
        name = value_name(param) if is_argument else option_names(param)
        panels.setdefault(title, []).append((name, _param_help(param, ctx)))
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            title = getattr(sub, "rich_help_panel", None) or "Commands"
            panels.setdefault(title, []).append((name, _summary(sub)))
    return [(title, rows) for title, rows in panels.items() if rows]


def _summary(command: Any) -> str:
    if command.short_help:
        return str(command.short_help)
    text = inspect.cleandoc(command.help or "").partition("\f")[0]
    return " ".join(text.split("\n\n", 1)[0].split())


def _param_help(param: Any, ctx: Any) -> str:
    text = " ".join((param.help or "").split())
    extra = []
    envvar = param.envvar
    if envvar and getattr(param, "show_envvar", True):
        extra.append("env var: " + (envvar if isinstance(envvar, str) else ", ".join(envvar)))
    default = _default_text(param)
    if default:
        extra.append(f"default: {default}")
    if param.required:
        extra.append("required")
    if extra:
        text = f"{text} [{'; '.join(extra)}]".strip()
    return text


def _default_text(param: Any) -> str:
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return show
    if show is False or param.param_type_name == "argument":
        return ""
    default = param.default
    if default is None or callable(default) or isinstance(default, DefaultPlaceholder):
        return ""
    if _takes_no_value(param):
        if param.secondary_opts:  # --x / --no-x: name the side that is on
            return str((param.opts if default else param.secondary_opts)[-1])
        return ""  # a plain flag is off unless given
    if isinstance(default, (list, tuple)):
        return ", ".join(_plain(v) for v in default)
    return _plain(default)


def _plain(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _two_columns(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Names left, help right; a name too long for the column gets its own line, its help below."""
    fitting = [len(name) for name, _ in rows if len(name) <= NAME_COLUMN_MAX]
    column = _INDENT + (max(fitting) if fitting else NAME_COLUMN_MAX) + _GAP
    if width - column < 30:  # a narrow terminal: every help below its name
        column = _INDENT + 4
    lines: list[str] = []
    for name, text in rows:
        indent = column
        if max((len(word) for word in text.split()), default=0) > width - column:
            indent = _INDENT + 4  # a long path or URL: below the name, so it is never split
        wrapped = _wrap(text, width - indent) or [""]
        head = " " * _INDENT + name
        if indent == column and len(head) + _GAP <= column:
            lines.append((head.ljust(column) + wrapped[0]).rstrip())
            rest = wrapped[1:]
        else:
            lines.append(head)
            rest = wrapped if text else []
        lines += [" " * indent + line for line in rest]
    return lines


def _paragraphs(text: str, width: int, indent: int) -> list[str]:
    """Prose re-flowed to the width; indented paragraphs (examples) and ``\\b`` blocks as written."""
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if lines:
            lines.append("")
        body = paragraph.splitlines()
        if body[0].strip() == "\b":
            lines += [" " * indent + line for line in body[1:]]
        elif all(line.startswith((" ", "\t")) for line in body if line.strip()):
            lines += [(" " * indent + line).rstrip() for line in body]
        else:
            lines += [" " * indent + line for line in _wrap(paragraph, width - indent)]
    return lines


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), max(width, 10), break_on_hyphens=False, break_long_words=True)
