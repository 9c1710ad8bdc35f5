"""The device plugin's and the exporter's command lines as the chart starts them, for the benches.

The chart runs ``kgpu-device-plugin`` and ``kgpu-exporter`` with ``devicePlugin.args`` / ``exporter.args``
of ``deploy/helm/kgpu/values.yaml``, and the device plugin reads the chart's default ``config`` from its
ConfigMap. Here the same arguments and the same config file, with the paths and addresses a bench can use
(``python -m kgpu.deviceplugin`` is ``kgpu-device-plugin``: the console script runs the same ``main``).

    plugin = chart_command("devicePlugin", workdir, {":8083": "127.0.0.1:0"})
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

VALUES = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "kgpu" / "values.yaml"
MODULES = {"devicePlugin": "kgpu.deviceplugin", "exporter": "kgpu.exporter"}
CONFIG_IN_POD = "/etc/kgpu/config.yaml"


def chart_args(section: str, workdir: Path, replace: dict[str, str] | None = None) -> list[str]:
    """The chart's default args of ``section``; the chart's config file is written to ``workdir`` and named in
    its place; each argument in ``replace`` is swapped (an address)."""
    values = yaml.safe_load(VALUES.read_text())
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(values["config"]))
    swap = {CONFIG_IN_POD: str(config), **(replace or {})}
    return [swap.get(a, a) for a in values[section]["args"]]


def chart_command(section: str, workdir: Path, replace: dict[str, str] | None = None) -> list[str]:
    """``python -m <entry point>`` with :func:`chart_args`."""
    return [sys.executable, "-m", MODULES[section], *chart_args(section, workdir, replace)]
