"""Metric families as plain values, and their Prometheus text exposition.

dcgm-exporter prints counters under their DCGM field name with no ``_total`` suffix
(``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``), integers as integers and DCGM doubles with six
decimals. ``prometheus_client``'s exposition would rename such counters, so kgpu renders the
text itself; :func:`to_prometheus` still offers the families to a ``prometheus_client`` registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Labels = tuple[tuple[str, str], ...]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Labels
    value: int | float
    double: bool = False


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    """The exposed name, exactly: for kgpu's own counters it already ends in ``_total``."""
    type: str
    help: str
    samples: tuple[Sample, ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: int | float, double: bool = False) -> str:
    if double:
        return f"{float(value):f}"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(families: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4; families without samples are left out, as dcgm-exporter does."""
    out: list[str] = []
    for family in families:
        if not family.samples:
            continue
        out.append(f"# HELP {family.name} {_escape_help(family.help)}\n# TYPE {family.name} {family.type}\n")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels)
            value = format_value(sample.value, sample.double)
            out.append(f"{family.name}{{{labels}}} {value}\n" if labels else f"{family.name} {value}\n")
    return "".join(out)


def to_prometheus(families: Iterable[Family]) -> list[Any]:
    """The families as ``prometheus_client`` metric objects (for a ``Collector.collect``)."""
    # Only for a program that plugs the collector into its own registry: prometheus_client is ~10 MB
    # resident that kgpu's exporter, which renders the text format itself, never loads.
    from prometheus_client.metrics_core import Metric

    out = []
    for family in families:
        name = family.name.removesuffix("_total") if family.type == "counter" else family.name
        metric = Metric(name, family.help, family.type)
        for sample in family.samples:
            metric.add_sample(family.name, dict(sample.labels), float(sample.value))
        out.append(metric)
    return out
