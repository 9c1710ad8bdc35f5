"""The chart's values as the operator sees them: the chart's defaults, with Helm's merge rules.

``defaults.yaml`` is the chart's ``values.yaml``, copied into the package by ``scripts/gen_chart.py`` (a test
checks the copy is current), so the operator and ``helm install`` start from the same defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def _defaults_text() -> str:
    return (resources.files("kgpu.operator") / "defaults.yaml").read_text()


def chart_defaults() -> dict[str, Any]:
    """A fresh copy of the chart's default values."""
    loaded: dict[str, Any] = yaml.safe_load(_defaults_text())
    return loaded


def coalesce(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over defaults: maps merge key by key, anything else replaces,
    and a null removes the default's key (``--set nodeSelector=null``)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
