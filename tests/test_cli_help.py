"""Every command's ``--help`` at 80 columns (a pipe, a standard terminal) is whole and readable.

Given any kgpu command, when an admin runs ``kgpu … --help`` in an 80-column terminal, then every
option name is printed whole (it can be copied), every value is named the way an admin would name
it (never a Python type such as ``<str>`` or ``<list[str]>``), no line is wider than the terminal,
and no sentence is broken before the line is full.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from kgpu.cli import app

WIDTH = 80
PYTHON_TYPE = re.compile(
    r"<(?:bool|str|int|float|path|file|text|integer|datetime|list\[[^\]]*\]|tuple\[[^\]]*\]|[a-z]+ range)>"
    r"|\{[^}\s]*\}\.\.\.|\blist\[\w+\]"
)


def _commands() -> Iterator[tuple[list[str], Any]]:
    root = typer.main.get_command(app)

    def walk(path: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk([*path, name], sub)

    yield from walk([], root)


COMMANDS = list(_commands())


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", [[], ["node"], ["cdi"], ["runtime"]], ids=["kgpu", "node", "cdi", "runtime"])
def test_a_group_typed_alone_shows_its_help(path: list[str]) -> None:
    # Given a newcomer's first `kgpu` (or `kgpu node`) without a command, then its usage and commands are shown
    # (Typer with rich printed nothing at all, exit 2), on stderr and with exit 2, as click does
    done = subprocess.run([sys.executable, "-m", "kgpu", *path], capture_output=True, text=True,
                          env={"COLUMNS": str(WIDTH), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"Usage: kgpu {' '.join(path)}".rstrip() + " [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in done.stderr and "Traceback" not in done.stderr


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    # the commands a newcomer meets first; a new command is picked up by the walk on its own
    assert {"", "gpus", "device-plugin", "exporter", "labeler", "mps-daemon", "node label", "lint"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "kgpu" for p, _ in COMMANDS])
def test_help_at_80_columns_names_every_option_whole(path: list[str], command: Any) -> None:
    text = _help(path)
    lines = text.splitlines()

    too_wide = [line for line in lines if len(line) > WIDTH]
    assert not too_wide, f"lines wider than {WIDTH} columns: {too_wide}"

    for param in command.params:
        if getattr(param, "hidden", False) or param.param_type_name != "option":
            continue
        for name in [*param.opts, *param.secondary_opts]:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} is cut or missing:\n{text}"
        if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
            value = _value_shown(text, param.opts[0])
            assert value, f"{param.opts[0]} shows no value name:\n{text}"
            # a NAME, or an optional value such as [=BOOL] (NVIDIA's booleans: --flag or --flag=false)
            assert re.fullmatch(r"(\[=)?[A-Z][A-Z0-9_]*(?:[,:|=][A-Z0-9_]*)*[,…]*(?(1)\])", value), (
                f"{param.opts[0]} shows {value!r} for its value"
            )

    placeholders = PYTHON_TYPE.findall(text)
    assert not placeholders, f"Python-type placeholders {placeholders} in:\n{text}"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "kgpu" for p, _ in COMMANDS])
def test_help_prose_is_not_broken_mid_sentence(path: list[str], command: Any) -> None:
    """A line of prose ends only where the next word would not fit (examples are left as written)."""
    lines = [line.rstrip() for line in _help(path).splitlines()]
    broken = []
    for a, b in itertools.pairwise(lines):
        if not a.strip() or not b.strip() or a.endswith(":"):
            continue
        column = _text_column(a)
        if _indent(b) != column or _is_entry(b):
            continue  # b starts something else: an example, a new option, a new section
        first_word = b.split()[0]
        if len(a) + 1 + len(first_word) <= WIDTH:
            broken.append(f"{a!r} / {b!r}")
    assert not broken, "prose broken before the line was full:\n" + "\n".join(broken)


def _value_shown(text: str, option: str) -> str | None:
    """The value name on the option's own row: the last word of its names (``-o, --output FORMAT``)."""
    for line in text.splitlines():
        names = line[2:].split("  ")[0] if line.startswith("  -") else ""
        if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", names):
            last = names.split()[-1]
            return None if last.startswith("-") else last
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_entry(line: str) -> bool:
    """An option, argument or command row in a section: two spaces, then its name."""
    return _indent(line) == 2 and bool(re.match(r"  (-|[A-Za-z][\w.-]*(…|\.\.\.)?(  |$))", line))


def _text_column(line: str) -> int:
    """Where a line's prose starts: after the name column of an entry row, else its indentation."""
    if _is_entry(line):
        match = re.match(r"  \S.*?  +(?=\S)", line)
        return match.end() if match else _indent(line)
    return _indent(line)


def test_help_in_a_real_pipe_uses_80_columns() -> None:
    """Without COLUMNS, a pipe gets 80 columns: `kgpu device-plugin --help | less` shows whole names."""
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "kgpu", "device-plugin", "--help"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    assert "--shared-devices-allocation-policy" in out and "--fail-on-init-error [=BOOL]" in out


def test_usage_line_names_arguments_without_python_syntax() -> None:
    assert "Usage: kgpu lint [OPTIONS] FILE…\n" in _help(["lint"])


def test_a_missing_argument_names_it_as_help_does() -> None:
    result = CliRunner().invoke(app, ["lint"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 2
    assert "FILE…" in result.output and not PYTHON_TYPE.search(result.output)


def test_every_command_module_is_listed_with_the_commands_it_registers() -> None:
    """kgpu.cli.COMMANDS is the list of commands: a module nobody lists would never run."""
    import importlib
    import pkgutil

    import typer

    from kgpu.cli import COMMANDS, commands

    modules = {m.name for m in pkgutil.iter_modules(commands.__path__)}
    assert modules == {m for names in COMMANDS.values() for m in names}
    for name, owners in COMMANDS.items():
        holder = typer.Typer()
        for module in owners:
            importlib.import_module(f"kgpu.cli.commands.{module}").register(holder)
        registered = {c.name for c in holder.registered_commands} | {
            g.typer_instance.info.name for g in holder.registered_groups if g.typer_instance is not None}
        assert name in registered, f"{owners} do not register {name!r}: {registered}"


def test_running_one_command_builds_no_other() -> None:
    """`kgpu gpus` imports only its own command module: building every command cost a third of its start-up."""
    code = ("import sys; sys.argv = ['kgpu', '--simulate', 't4', 'gpus', '--json']\n"
            "import kgpu.cli\ntry:\n    kgpu.cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('kgpu.cli.commands.')), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "['kgpu.cli.commands.gpus']"
