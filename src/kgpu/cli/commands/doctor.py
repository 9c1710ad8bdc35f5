"""``kgpu doctor``: inspect the node and print each pitfall found, with its evidence and exact fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kgpu.cli.state import global_options

if TYPE_CHECKING:
    from kgpu.doctor.finding import Finding

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
_AREAS = {
    "gpu": "GPU",
    "host": "Host",
    "driver": "Driver",
    "cuda": "CUDA",
    "disk": "Disk",
    "k8s": "Kubernetes",
    "runtime": "Container runtime",
    "kubelet": "Kubelet",
    "cdi": "CDI",
}


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    ctx: typer.Context,
    root: Annotated[
        Path,
        typer.Option(
            help="Filesystem root of the node to inspect (all /proc, /sys, /etc reads go under it).",
            metavar="DIR",
        ),
    ] = Path("/"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of {id, status, title, evidence, fix}.")
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            help="Run only these checks: comma-separated ids, e.g. driver.nouveau,k8s.swap.", metavar="ID,…"
        ),
    ] = None,
    kubelet_config: Annotated[
        str,
        typer.Option(
            help="The kubelet's config file, as a path on the node (read under --root).", metavar="PATH"
        ),
    ] = "/var/lib/kubelet/config.yaml",
) -> None:
    """Find what stands between this node and working GPU pods, with evidence and the exact fix.

    Checks the PCI bus and BARs, the hypervisor and EFI, nouveau, the NVIDIA driver, NVML and
    device nodes, CUDA toolkit compatibility, disk space, swap, kernel modules, sysctls, SELinux,
    firewalld, time sync, the NVIDIA Container Toolkit, containerd / docker / CRI-O configuration,
    the kubelet and CDI specs. Fixes are written for the distribution family found in os-release.
    FAIL means this node cannot run GPU pods now; WARN is a latent risk (after a reboot, a
    daemon-reload, …) with its exact fix. Evidence states only what was read.
    Exit status: 1 if any check fails, else 0 (warnings allowed).

    Examples:

      kgpu doctor                                    # this node

      kgpu doctor --only driver.nouveau,k8s.swap --json

      kgpu --driver-root /usr/local/nvidia doctor   # driver outside /usr

      kgpu --simulate h100x8 doctor --root /mnt/node-image
    """
    from kgpu.doctor import gather, run_checks, select
    from kgpu.fsio import check_root

    root = check_root(root)
    checks = select(only.split(",") if only is not None else None)
    options = global_options(ctx)
    facts = gather(root, options.open_backend, kubelet_config)
    findings = run_checks(facts, checks)
    if as_json:
        json.dump([f.to_json() for f in findings], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print(findings, facts.host.os_release.pretty_name if facts.host.os_release else "unknown OS", root)
    if any(f.status.value == "fail" for f in findings):
        raise typer.Exit(1)


def _print(findings: list[Finding], os_name: str, root: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 160)
    counts = {s: sum(1 for f in findings if f.status.value == s) for s in ("pass", "warn", "fail", "skip")}
    title = f"kgpu doctor · {os_name} · root {root} · " + ", ".join(
        f"{n} {s}" for s, n in counts.items() if n
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("Status", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Finding", overflow="fold")
    table.add_column("Evidence", overflow="fold")
    area = None
    for f in findings:
        if f.area != area:
            if area is not None:
                table.add_section()
            area = f.area
            table.add_row("", Text(_AREAS.get(area, area), style="bold"), "", "")
        table.add_row(
            Text(f.status.value.upper(), style=_STYLE[f.status.value]), f.id, Text(f.title), Text(f.evidence)
        )
    console.print(table)
    todo = [f for f in findings if f.fix and f.status.value in ("fail", "warn")]
    for f in todo:
        console.print(Text(f"\n{f.status.value.upper()} {f.id}: {f.title}", style=_STYLE[f.status.value]))
        console.print(Text(f.fix), soft_wrap=True)
