"""Small tomlkit helpers: parse with a located error, and edit tables without wrecking their layout."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError
from tomlkit.items import AoT, InlineTable, Table

from kgpu.errors import ConfigError


def parse(text: str | None, node_path: str) -> Any:
    """Parse TOML; a syntax error names the file, line and column and says nothing was written."""
    try:
        return tomlkit.parse(text or "")
    except ParseError as exc:
        reason = str(exc).split(" at line ")[0]
        raise ConfigError(
            f"{node_path}:{exc.line}:{exc.col}: not valid TOML ({reason}); fix the file first, nothing was changed"
        ) from None


def dumps(doc: Any) -> str:
    text: str = tomlkit.dumps(doc)
    return text


def is_table(value: Any) -> bool:
    return isinstance(value, Table | InlineTable | dict)


def get_path(doc: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` (a list of keys), or None when any part is missing."""
    node = doc
    for key in path:
        if not is_table(node) or key not in node:
            return None
        node = node[key]
    return node


def ensure_table(doc: Any, path: Sequence[str], header: bool = True) -> Any:
    """The table at ``path``, created where missing.

    Intermediate tables are created as super tables (no ``[header]`` line of their own); so is the
    last one when ``header`` is false — tomlkit adds its header if a key is ever put into it.
    """
    node = doc
    for i, key in enumerate(path):
        if key not in node:
            last = i == len(path) - 1
            node[key] = tomlkit.table(is_super_table=not (last and header))
        node = node[key]
        if not is_table(node):
            dotted = ".".join(path[: i + 1])
            raise ConfigError(f"{dotted} is a {type(node).__name__}, expected a table")
    return node


def _indent_of(table: Any) -> str | None:
    container = getattr(table, "value", None)
    body = getattr(container, "body", None)
    if body is None:
        return None
    for key, item in body:
        if key is not None and not isinstance(item, Table | AoT):
            indent: str = item.trivia.indent
            return indent
    return None


def set_key(table: Any, key: str, value: Any) -> None:
    """Set ``table[key] = value``, keeping the indentation the table's other keys use."""
    if isinstance(table, InlineTable):
        table[key] = value
        return
    if key in table and not is_table(table[key]):
        old_indent = table.item(key).trivia.indent
        table[key] = value
        table.item(key).trivia.indent = old_indent
        return
    indent = _indent_of(table)
    table[key] = value
    if indent is not None and hasattr(table, "item"):
        table.item(key).trivia.indent = indent


def copy_table(table: Any) -> Any:
    """A copy of ``table`` without its comment lines (they describe the original, and those that follow
    its last key belong to whatever comes next in the file); inline comments and indentation are kept."""
    if not isinstance(table, Table):
        return copy.deepcopy(table)
    out = tomlkit.table(is_super_table=table.is_super_table())
    out.trivia.indent = table.trivia.indent
    for key, item in table.value.body:
        if key is not None:  # None: a comment line or blank lines
            out.raw_append(key, copy_table(item) if isinstance(item, Table) else copy.deepcopy(item))
    return out


def last_table(table: Any) -> Any:
    """The table printed last inside ``table`` (itself when it has no sub-tables at its end)."""
    while isinstance(table, Table):
        keyed = [item for key, item in table.value.body if key is not None]
        if not keyed or not isinstance(keyed[-1], Table):
            break
        table = keyed[-1]
    return table


def take_trailing_comments(table: Any) -> list[Any]:
    """Remove and return the comment lines and blank lines after ``table``'s last key.

    tomlkit keeps the comments written above the *next* table at the end of the previous one; a
    table inserted after ``table`` must carry them along, or it would land between them and the
    table they describe.
    """
    last = last_table(table)
    if not isinstance(last, Table):
        return []
    body = last.value.body
    n = 0
    while n < len(body) and body[len(body) - 1 - n][0] is None:
        n += 1
    if n == 0:
        return []
    items = [item for _, item in body[len(body) - n:]]
    del body[len(body) - n:]  # keyless items at the end: the key index is unaffected
    return items


def put_trailing_comments(table: Any, items: list[Any]) -> None:
    """Append comment/blank-line items (from :func:`take_trailing_comments`) after ``table``'s last key."""
    last = last_table(table)
    if isinstance(last, Table):
        for item in items:
            last.value.body.append((None, item))


def plain(doc: Any) -> Any:
    """The parsed data without formatting (what the runtime itself would decode)."""
    return doc.unwrap() if hasattr(doc, "unwrap") else doc


def same(a: str, b: str) -> bool:
    """Whether two TOML texts mean the same (formatting and comments aside)."""
    try:
        return bool(tomlkit.parse(a).unwrap() == tomlkit.parse(b).unwrap())
    except ParseError:
        return False


def string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
