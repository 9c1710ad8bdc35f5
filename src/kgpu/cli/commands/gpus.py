"""``kgpu gpus``: the node's GPU inventory, and ``--watch-health`` for its health events."""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kgpu.cli.state import global_options

if TYPE_CHECKING:
    from kgpu.gpu.backend import GPUBackend
    from kgpu.gpu.model import GPUReadings, Inventory


def register(app: typer.Typer) -> None:
    app.command("gpus")(gpus)


def gpus(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array, one object per GPU (stable keys).")
    ] = False,
    readings: Annotated[
        bool, typer.Option("--readings", help="Also read live sensors: utilization, memory used, temperature, ...")
    ] = False,
    watch_health: Annotated[
        bool,
        typer.Option(
            "--watch-health", help="Print health events (XID, ECC, lost, recovered) as they arrive, until Ctrl-C."
        ),
    ] = False,
) -> None:
    """List the node's GPUs: UUID, product, memory, PCI bus, NUMA node, MIG devices, NVLink peers.

    Examples:

      kgpu gpus                         # on a GPU node (NVML)

      kgpu --simulate h100x8 gpus --json

      kgpu --simulate t4 --simulate-events /tmp/ev.jsonl gpus --watch-health
    """
    backend = global_options(ctx).open_backend()
    try:
        if watch_health:
            _watch(backend, as_json)
            return
        inventory = backend.inventory()
        values = _read_all(backend, inventory) if readings else {}
        if as_json:
            from kgpu.gpu.serialize import inventory_to_json

            doc = inventory_to_json(inventory, {u: r for u, r in values.items() if not isinstance(r, str)})
            for entry in doc:
                if readings and isinstance(values.get(entry["uuid"]), str):
                    entry["readings"] = None
                    entry["readings_error"] = values[entry["uuid"]]
            json.dump(doc, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _print_table(inventory, values)
    finally:
        backend.close()


def _read_all(backend: GPUBackend, inventory: Inventory) -> dict[str, GPUReadings | str]:
    from kgpu.gpu.backend import BackendError

    out: dict[str, GPUReadings | str] = {}
    for g in inventory.gpus:
        try:
            out[g.uuid] = backend.readings(g.uuid)
        except BackendError as exc:
            out[g.uuid] = str(exc)
    return out


def _print_table(inventory: Inventory, values: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{len(inventory.gpus)} GPU(s) · driver {inventory.driver_version} · CUDA {inventory.cuda_driver_version}"
        f" · backend {inventory.backend}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("#")
    table.add_column("UUID", no_wrap=True)
    for col in ( "Product", "Arch", "CC", "Memory", "PCI bus", "NUMA", "MIG", "NVLink"):
        table.add_column(col, overflow="fold")
    if values:
        table.add_column("Now")
    for g in inventory.gpus:
        mig = "off" if not g.mig_enabled else ", ".join(m.profile for m in g.mig_devices) or "on (no devices)"
        if not g.mig_capable:
            mig = "—"
        links = _links(g.nvlink_peers, len(inventory.gpus))
        row = [
            str(g.index), g.uuid, g.name, g.family, str(g.compute_capability), f"{g.memory_total_mib} MiB",
            g.pci_bus_id, "—" if g.numa_node is None else str(g.numa_node), mig, links,
        ]
        if values:
            r = values.get(g.uuid)
            row.append(
                f"[red]{r}[/red]" if isinstance(r, str) or r is None else
                f"{r.gpu_utilization_percent}% · {r.memory_used_mib} MiB · {r.temperature_c}°C · {r.power_w:.0f} W"
                if r.power_w is not None else f"{r.gpu_utilization_percent}% · {r.memory_used_mib} MiB"
            )
        table.add_row(*row)
    # Bus ids such as 00000000:AB:00.0 contain emoji codes (:AB:); never interpret data as markup.
    console = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(table)


def _links(peers: Any, gpu_count: int) -> str:
    if not peers:
        return "—"
    counts = {p.links for p in peers}
    if len(peers) > 1 and len(peers) == gpu_count - 1 and len(counts) == 1:
        return f"all {len(peers)} peers ×{counts.pop()}"
    return ", ".join(f"{p.peer_index}×{p.links}" for p in peers)


def _watch(backend: GPUBackend, as_json: bool) -> None:
    from kgpu.daemon import StopSignals
    from kgpu.gpu.health import follow

    stop = threading.Event()
    names = {g.uuid: f"GPU {g.index}" for g in backend.inventory().gpus}
    names.update({m.uuid: f"GPU {m.parent_index} MIG {m.profile}" for m in backend.inventory().mig_devices})
    if not as_json:
        print(f"watching health of {len(names)} device(s); Ctrl-C to stop", file=sys.stderr, flush=True)
    with StopSignals(stop):  # SIGTERM and Ctrl-C end the watch
        for event in follow(backend.health_feed(), stop):
            if as_json:
                print(json.dumps(event.to_json()), flush=True)
            else:
                what = f"XID {event.xid}" if event.xid is not None else str(event.kind)
                print(f"{names.get(event.uuid, '?')} {event.uuid}: {what} {event.detail}".rstrip(), flush=True)
