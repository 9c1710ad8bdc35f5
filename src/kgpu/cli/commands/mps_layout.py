"""``kgpu mps-layout``: the MPS slices a node offers under a config, and what Allocate gives one."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from kgpu.cli.commands.mps_daemon import MPS_FLAGS, load_sharing
from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.cli.state import global_options
from kgpu.config import DEVICE_PLUGIN


def register(app: typer.Typer) -> None:
    app.command("mps-layout", cls=FlagCommand)(mps_layout)


@takes_flags(DEVICE_PLUGIN, MPS_FLAGS)
def mps_layout(
    ctx: typer.Context,
    given: Given,
    allocate: Annotated[
        list[str] | None,
        typer.Option("--allocate", help="Print the Allocate response for these slice IDs (one container; "
                                        "repeat the option for several slices of one GPU).", metavar="ID"),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table, json, or env (with --allocate: KEY=VALUE lines).",
                          metavar="FORMAT")
    ] = "table",
) -> None:
    """Check a sharing.mps config against this node's GPUs and show the slices it would offer.

    Refuses layouts that oversubscribe a GPU (showing the arithmetic), MIG-enabled or pre-Volta GPUs,
    and more than 48 clients per GPU. With --allocate, prints what a container gets for a slice:
    CUDA_MPS_PIPE_DIRECTORY, CUDA_MPS_PINNED_DEVICE_MEM_LIMIT, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, ...

    Examples:

      kgpu --simulate h100x8 mps-layout --config-file mps.yaml

      kgpu mps-layout --config-file mps.yaml --allocate GPU-…::gpu-20gb-0 -o env
    """
    from kgpu.errors import ConfigError
    from kgpu.sharing.allocation import slice_allocation
    from kgpu.sharing.layout import build_layout, expected_sms, layout_to_json
    from kgpu.sharing.paths import MpsPaths

    if output not in ("table", "json", "env"):
        raise ConfigError(f"--output {output!r}: allowed values are table, json, env")
    opts = global_options(ctx)
    config, root, driver_root, _ = load_sharing(opts, given)
    paths = MpsPaths(root)
    backend = opts.open_backend(driver_root)
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    layout = build_layout(inventory, config)

    if allocate:
        alloc = slice_allocation(layout, allocate, paths)
        if output == "env":
            for key, value in alloc.envs.items():
                print(f"{key}={value}")
            return
        doc = {
            "envs": dict(alloc.envs),
            "mounts": [{"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
                       for m in alloc.mounts],
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
        return
    if output == "json":
        json.dump(layout_to_json(layout), sys.stdout, indent=2)
        print()
        return
    if output == "env":
        raise ConfigError("--output env needs --allocate ID")
    if not layout.enabled:
        print(f"{config.source}: sharing.mps shares no GPU (no resources or slices)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MPS slices · {len(layout.slices)} on {len(layout.gpus)} GPU(s) · root {paths.root}",
                  title_justify="left")
    for col in ("GPU", "Resource", "Device ID", "Memory", "SMs"):
        table.add_column(col, no_wrap=col == "Device ID")
    for gpu in layout.gpus:
        for s in gpu.slices:
            sms = expected_sms(gpu.multiprocessor_count, s.compute_percent)
            table.add_row(str(gpu.index), s.resource, s.id, f"{s.memory_mib} MiB",
                          f"{s.compute_percent} % (~{sms:.0f} of {gpu.multiprocessor_count})")
        used = sum(s.memory_mib for s in gpu.slices)
        pct = sum(s.compute_percent for s in gpu.slices)
        table.add_row(str(gpu.index), "[dim]total[/dim]", "", f"[dim]{used} of {gpu.memory_total_mib} MiB[/dim]",
                      f"[dim]{pct} %[/dim]")
    Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 200).print(table)
