"""Manifests written once in Python, evaluated by the operator and emitted as Helm templates for the chart.

The node DaemonSets are the one thing both install modes create. Their shape is written once, in
:mod:`kgpu.operator.components`, as plain dicts and lists whose value-dependent leaves are small
expressions over the chart's values (``Ref("devicePlugin.resources")``). Two readers use that tree:

* :func:`evaluate` — the operator: a concrete Kubernetes object from concrete values;
* :func:`to_helm` — ``scripts/gen_chart.py``: the chart's template text (``{{ toYaml .Values.x | nindent 12 }}``),
  committed under ``deploy/helm/kgpu/templates/`` with a test that it is current and a test that Helm's
  own engine renders it to exactly what :func:`evaluate` gives for the same values.

The vocabulary is deliberately small — it covers what the DaemonSets need, nothing more::

    {"resources": Yaml(Ref("devicePlugin.resources")),          # a subtree from values
     "runtimeClassName": Opt(Ref("runtimeClassName")),           # key left out when empty
     "env": [{"name": "A", "value": "b"},
             When(Ref("driverRoot"), {"name": "NVIDIA_DRIVER_ROOT", "value": Quote(Ref("driverRoot"))}),
             Splice(Ref("devicePlugin.env"))]}                    # a list from values, spliced in
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

# --------------------------------------------------------------------------------------------------
# What an expression is evaluated against
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """The chart's values plus what Helm knows about a release."""

    values: Mapping[str, Any]
    release: str = "kgpu"
    namespace: str = "kube-system"
    chart: str = "kgpu"
    chart_version: str = "0.1.0"
    app_version: str = "0.1.0"
    managed_by: str = "Helm"


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """``values["a"]["b"]`` for ``"a.b"``; None where a key is missing (Helm's missing value)."""
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


# --------------------------------------------------------------------------------------------------
# Expressions: each one evaluates in Python and writes itself as a Go template pipeline
# --------------------------------------------------------------------------------------------------


class Expr:
    def eval(self, ctx: Context) -> Any:
        raise NotImplementedError

    def go(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ref(Expr):
    """A chart value by its dotted path."""

    path: str

    def eval(self, ctx: Context) -> Any:
        return lookup(ctx.values, self.path)

    def go(self) -> str:
        return ".Values." + self.path


@dataclass(frozen=True, slots=True)
class Concat(Expr):
    """Lists joined (sprig ``concat``), e.g. a component's args and extraArgs."""

    parts: tuple[Expr, ...]

    def eval(self, ctx: Context) -> Any:
        out: list[Any] = []
        for part in self.parts:
            out.extend(part.eval(ctx) or [])
        return out

    def go(self) -> str:
        return "(concat " + " ".join(p.go() for p in self.parts) + ")"


@dataclass(frozen=True, slots=True)
class Override(Expr):
    """``component.key`` when the component sets that key (even to an empty value), else the global value."""

    component: str
    key: str
    fallback: str

    def eval(self, ctx: Context) -> Any:
        own = lookup(ctx.values, self.component)
        if isinstance(own, Mapping) and self.key in own and own[self.key] is not None:
            return own[self.key]
        return lookup(ctx.values, self.fallback)

    def go(self) -> str:
        c = ".Values." + self.component
        return f'(ternary (get {c} "{self.key}") .Values.{self.fallback} (hasKey {c} "{self.key}"))'


@dataclass(frozen=True, slots=True)
class Not(Expr):
    """The negation of a value's truth (``not``), e.g. a volume used only when a feature is off."""

    inner: Expr

    def eval(self, ctx: Context) -> Any:
        return not self.inner.eval(ctx)

    def go(self) -> str:
        return f"(not {self.inner.go()})"


@dataclass(frozen=True, slots=True)
class Quote(Expr):
    """A value as a YAML string, as Helm's ``quote`` writes it."""

    inner: Expr

    def eval(self, ctx: Context) -> Any:
        value = self.inner.eval(ctx)
        return "" if value is None else _go_string(value)

    def go(self) -> str:
        return f"{self.inner.go()} | quote"


@dataclass(frozen=True, slots=True)
class Fullname(Expr):
    """The release's base object name (the chart's ``kgpu.fullname``)."""

    def eval(self, ctx: Context) -> Any:
        if ctx.chart in ctx.release:
            return ctx.release[:50].rstrip("-")
        return f"{ctx.release}-{ctx.chart}"[:50].rstrip("-")

    def go(self) -> str:
        return 'include "kgpu.fullname" .'


@dataclass(frozen=True, slots=True)
class Namespace(Expr):
    def eval(self, ctx: Context) -> Any:
        return ctx.namespace

    def go(self) -> str:
        return ".Release.Namespace"


@dataclass(frozen=True, slots=True)
class Image(Expr):
    """``repository:tag``, the tag defaulting to the chart's appVersion (the chart's ``kgpu.image``)."""

    def eval(self, ctx: Context) -> Any:
        image = ctx.values.get("image") or {}
        return f"{image.get('repository')}:{image.get('tag') or ctx.app_version}"

    def go(self) -> str:
        return 'include "kgpu.image" .'


@dataclass(frozen=True, slots=True)
class Labels(Expr):
    """The labels every object of the release carries, plus its component (``kgpu.labels``)."""

    component: str = ""

    def eval(self, ctx: Context) -> Any:
        labels = {
            "helm.sh/chart": f"{ctx.chart}-{ctx.chart_version}".replace("+", "_"),
            "app.kubernetes.io/name": ctx.chart[:63].rstrip("-"),
            "app.kubernetes.io/instance": ctx.release,
            "app.kubernetes.io/version": ctx.app_version,
            "app.kubernetes.io/managed-by": ctx.managed_by,
            "app.kubernetes.io/part-of": "kgpu",
        }
        if self.component:
            labels["app.kubernetes.io/component"] = self.component
        return labels

    def go(self) -> str:
        if self.component:
            return f'include "kgpu.componentLabels" (dict "root" . "component" "{self.component}")'
        return 'include "kgpu.labels" .'


@dataclass(frozen=True, slots=True)
class SelectorLabels(Expr):
    """The labels a component's DaemonSet selects its pods by (``kgpu.selectorLabels``)."""

    component: str

    def eval(self, ctx: Context) -> Any:
        return {
            "app.kubernetes.io/name": ctx.chart[:63].rstrip("-"),
            "app.kubernetes.io/instance": ctx.release,
            "app.kubernetes.io/component": self.component,
        }

    def go(self) -> str:
        return f'include "kgpu.selectorLabels" (dict "root" . "component" "{self.component}")'


DRIVER_MOUNTS = "driver-mounts"


@dataclass(frozen=True, slots=True)
class ToolkitFree(Expr):
    """The node runs GPU containers without the NVIDIA container toolkit: the device plugin's
    ``deviceListStrategy`` is (or lists) ``driver-mounts`` (the chart's ``kgpu.toolkitFree``)."""

    def eval(self, ctx: Context) -> Any:
        strategy = lookup(ctx.values, "config.flags.plugin.deviceListStrategy")
        return "true" if strategy is not None and DRIVER_MOUNTS in _go_string(strategy) else ""

    def go(self) -> str:
        return '(include "kgpu.toolkitFree" .)'


@dataclass(frozen=True, slots=True)
class Checksum(Expr):
    """sha256 of a value's JSON, so a pod template changes when that value does (Go's ``toJson``)."""

    inner: Expr

    def eval(self, ctx: Context) -> Any:
        return hashlib.sha256(go_json(self.inner.eval(ctx)).encode()).hexdigest()

    def go(self) -> str:
        return f"toJson {self.inner.go()} | sha256sum"


def go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it: sorted keys, no spaces, <>& escaped, UTF-8 kept."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _go_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------------------------------
# Structure: where an expression's value goes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """A scalar built from literal text and expressions, e.g. ``Text(Fullname(), "-labeler")``."""

    parts: tuple[str | Expr, ...]

    def __init__(self, *parts: str | Expr) -> None:
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True, slots=True)
class Yaml:
    """A mapping or list taken whole from an expression (``toYaml``)."""

    expr: Expr


@dataclass(frozen=True, slots=True)
class Opt:
    """A mapping key present only when its value is not empty (``with``); ``scalar`` for strings."""

    expr: Expr
    scalar: bool = False


@dataclass(frozen=True, slots=True)
class When:
    """List items (or a mapping value) present only when ``cond`` is true (``if``)."""

    cond: Expr
    value: Any
    items: bool = field(default=False)


def when_items(cond: Expr, *items: Any) -> When:
    return When(cond, list(items), items=True)


@dataclass(frozen=True, slots=True)
class Splice:
    """The items of a list value, or the keys of a mapping value, spliced in place (``with`` + ``toYaml``)."""

    expr: Expr


SPLICE_KEY = "<<splice>>"
"""A mapping key whose value (a :class:`Splice` or a list of them) adds keys from values."""


@dataclass(frozen=True, slots=True)
class Document:
    """One object of the chart: created when ``enabled`` is true; ``comment`` heads the template."""

    name: str
    enabled: Expr | None
    body: Mapping[str, Any]
    comment: str = ""


# --------------------------------------------------------------------------------------------------
# Evaluation (the operator)
# --------------------------------------------------------------------------------------------------


def evaluate(node: Any, ctx: Context) -> Any:
    """The concrete value of a tree: what Helm renders for these values."""
    if isinstance(node, Expr):
        return node.eval(ctx)
    if isinstance(node, Text):
        return "".join(p if isinstance(p, str) else _go_string(p.eval(ctx)) for p in node.parts)
    if isinstance(node, Yaml):
        return _plain(node.expr.eval(ctx))
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == SPLICE_KEY:
                for splice in value if isinstance(value, list) else [value]:
                    out.update(_plain(splice.expr.eval(ctx)) or {})
                continue
            if isinstance(value, Opt):
                got = value.expr.eval(ctx)
                if got:
                    # `{{ . }}` prints the value and YAML reads it back: booleans and numbers stay what they are.
                    keep = not value.scalar or isinstance(got, bool | int | float)
                    out[key] = _plain(got) if keep else _go_string(got)
                continue
            if isinstance(value, When):
                if value.cond.eval(ctx):
                    out[key] = evaluate(value.value, ctx)
                continue
            out[key] = evaluate(value, ctx)
        return out
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            if isinstance(item, When) and item.items:
                if item.cond.eval(ctx):
                    items.extend(evaluate(list(item.value), ctx))
            elif isinstance(item, Splice):
                items.extend(_plain(item.expr.eval(ctx)) or [])
            else:
                items.append(evaluate(item, ctx))
        return items
    return node


def evaluate_document(doc: Document, ctx: Context) -> dict[str, Any] | None:
    if doc.enabled is not None and not doc.enabled.eval(ctx):
        return None
    result: dict[str, Any] = evaluate(doc.body, ctx)
    return result


def _plain(value: Any) -> Any:
    """A deep copy made of dicts, lists and scalars (values may be read-only mappings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# Emission (the chart)
# --------------------------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _key(key: str) -> str:
    return _scalar(key)


def _emit_scalar_expr(node: Any) -> str:
    if isinstance(node, Expr):
        return "{{ " + node.go() + " }}"
    assert isinstance(node, Text)
    return "".join(p if isinstance(p, str) else "{{ " + p.go() + " }}" for p in node.parts)


def _is_scalar_hole(node: Any) -> bool:
    return isinstance(node, Expr | Text)


def _emit_map(node: Mapping[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in node.items():
        if key == SPLICE_KEY:
            for splice in value if isinstance(value, list) else [value]:
                if isinstance(splice.expr, Labels | SelectorLabels):
                    lines.append(f"{pad}{{{{- {splice.expr.go()} | nindent {indent} }}}}")
                    continue
                lines.append(f"{pad}{{{{- with {splice.expr.go()} }}}}")
                lines.append(f"{pad}{{{{- toYaml . | nindent {indent} }}}}")
                lines.append(f"{pad}{{{{- end }}}}")
            continue
        if isinstance(value, Opt):
            lines.append(f"{pad}{{{{- with {value.expr.go()} }}}}")
            if value.scalar:
                lines.append(f"{pad}{_key(key)}: {{{{ . }}}}")
            else:
                lines.append(f"{pad}{_key(key)}:")
                lines.append(f"{pad}  {{{{- toYaml . | nindent {indent + 2} }}}}")
            lines.append(f"{pad}{{{{- end }}}}")
            continue
        if isinstance(value, When):
            lines.append(f"{pad}{{{{- if {value.cond.go()} }}}}")
            _emit_entry(key, value.value, indent, lines)
            lines.append(f"{pad}{{{{- end }}}}")
            continue
        _emit_entry(key, value, indent, lines)


def _emit_entry(key: str, value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if _is_scalar_hole(value):
        lines.append(f"{pad}{_key(key)}: {_emit_scalar_expr(value)}")
    elif isinstance(value, Yaml):
        lines.append(f"{pad}{_key(key)}:")
        pipe = "" if isinstance(value.expr, Labels | SelectorLabels) else "toYaml "
        lines.append(f"{pad}  {{{{- {pipe}{value.expr.go()} | nindent {indent + 2} }}}}")
    elif isinstance(value, Mapping):
        if not value:
            lines.append(f"{pad}{_key(key)}: {{}}")
        else:
            lines.append(f"{pad}{_key(key)}:")
            _emit_map(value, indent + 2, lines)
    elif isinstance(value, list):
        if not value:
            lines.append(f"{pad}{_key(key)}: []")
        elif all(not isinstance(v, Mapping | list | When | Splice | Yaml | Expr | Text) for v in value):
            lines.append(f"{pad}{_key(key)}: {_scalar(value)}")
        else:
            lines.append(f"{pad}{_key(key)}:")
            _emit_list(value, indent + 2, lines)
    else:
        lines.append(f"{pad}{_key(key)}: {_scalar(value)}")


def _emit_list(node: Sequence[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in node:
        if isinstance(item, When) and item.items:
            lines.append(f"{pad}{{{{- if {item.cond.go()} }}}}")
            _emit_list(list(item.value), indent, lines)
            lines.append(f"{pad}{{{{- end }}}}")
        elif isinstance(item, Splice):
            lines.append(f"{pad}{{{{- with {item.expr.go()} }}}}")
            lines.append(f"{pad}{{{{- toYaml . | nindent {indent} }}}}")
            lines.append(f"{pad}{{{{- end }}}}")
        elif isinstance(item, Mapping):
            sub: list[str] = []
            _emit_map(item, indent + 2, sub)
            first = next(i for i, line in enumerate(sub) if not line.lstrip().startswith("{{"))
            sub[first] = f"{pad}- " + sub[first][indent + 2:]
            lines.extend(sub)
        elif _is_scalar_hole(item):
            lines.append(f"{pad}- {_emit_scalar_expr(item)}")
        elif isinstance(item, list):
            raise ValueError("nested lists are not used in manifests")
        else:
            lines.append(f"{pad}- {_scalar(item)}")


def to_helm(doc: Document) -> str:
    """The chart template text of one document."""
    lines: list[str] = []
    if doc.enabled is not None:
        lines.append(f"{{{{- if {doc.enabled.go()} }}}}")
    for comment in doc.comment.strip().splitlines():
        lines.append(f"# {comment}".rstrip())
    _emit_map(doc.body, 0, lines)
    if doc.enabled is not None:
        lines.append("{{- end }}")
    return "\n".join(lines) + "\n"
