"""``kgpu exporter``: GPU metrics for Prometheus under dcgm-exporter's names, without DCGM.

Its options are the rows of :mod:`kgpu.config.flags` for ``dcgm-exporter`` (and NVIDIA's driver-root
flags); the same rows make the command line of ``kgpu-exporter`` (:func:`kgpu.exporter.daemon.main`),
and both call :func:`kgpu.exporter.daemon.run`.
"""

from __future__ import annotations

import typer

from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.cli.state import global_options
from kgpu.config.flags import DCGM_EXPORTER, DEVICE_PLUGIN, GLOBAL_FLAGS, flags_of


def register(app: typer.Typer) -> None:
    app.command("exporter", cls=FlagCommand)(exporter)


@takes_flags(DCGM_EXPORTER, extra=flags_of(DEVICE_PLUGIN, GLOBAL_FLAGS), panel="Where the NVIDIA driver is")
def exporter(ctx: typer.Context, given: Given) -> None:
    """Serve GPU metrics with dcgm-exporter's names, labels and types, read straight from NVML.

    Every scrape reads each GPU afresh; a GPU that fails or hangs loses its series for that scrape
    and counts in kgpu_gpu_read_errors_total, the scrape itself never fails. Containers holding a GPU
    (from the kubelet's PodResources API) become pod/namespace/container labels.

    Examples:

      kgpu exporter                           # on a GPU node: :9400/metrics

      kgpu --simulate h100x8 exporter --once  # one scrape of a simulated node

      kgpu exporter --collect my-counters.csv --hostname-label hostname

    A changed --collect file is applied without a restart (an invalid one is refused; the previous
    counters stay). SIGTERM stops the exporter.
    """
    # Imported here: every command module is imported to build the command line (see device_plugin.py).
    from kgpu.exporter.daemon import run

    run(global_options(ctx), given)
