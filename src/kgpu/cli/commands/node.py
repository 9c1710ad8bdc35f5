"""``kgpu node prepare``: apply the doctor's safe fixes to this node (a dry-run plan unless --apply)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

node_app = typer.Typer(name="node", help="Prepare this node for GPU workloads in Kubernetes.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app)


@node_app.command("prepare")
def prepare(
    ctx: typer.Context,
    root: Annotated[
        Path, typer.Option(help="Filesystem root of the node (every file is read and written under it).",
                           metavar="DIR")
    ] = Path("/"),
    apply: Annotated[bool, typer.Option("--apply", help="Write the changes. Without it, only print the plan.")]
    = False,
    kubelet_config: Annotated[
        str, typer.Option(help="The kubelet's config file, as a path on the node.", metavar="PATH")
    ] = "/var/lib/kubelet/config.yaml",
) -> None:
    """Fix what the doctor found, safely: plan first, then write every file or none, each with a backup.

    Steps (only those the node needs): blacklist nouveau and nova
    (/etc/modprobe.d/blacklist-nouveau.conf), load overlay and br_netfilter at boot
    (/etc/modules-load.d/k8s.conf), set the Kubernetes sysctls at boot
    (/etc/sysctl.d/99-kubernetes.conf), comment swap out of /etc/fstab, add the nvidia runtime
    to each installed container runtime (as kgpu runtime configure does), and write a CDI spec for
    the GPUs to /etc/cdi/nvidia.yaml when there is none (as kgpu cdi generate does; the driver
    root is --driver-root or the first well-known one holding the driver). Every file written keeps
    its previous content as FILE.kgpu.bak and, the first time, its original as FILE.kgpu.orig.
    Commands that make a change take effect now (sysctl --system, swapoff -a, modprobe,
    update-initramfs/dracut, restarting the runtime) are printed, not run. Running it again on a
    prepared node changes nothing.

    Examples:

      kgpu node prepare                 # show the plan (unified diffs), write nothing

      kgpu node prepare --apply
    """
    from kgpu.cli.state import global_options
    from kgpu.doctor.gather import gpu_facts
    from kgpu.errors import ConfigError
    from kgpu.fsio import check_root
    from kgpu.host.facts import read_host_facts
    from kgpu.prepare import apply_prepare, plan_prepare

    check_root(root)

    facts = read_host_facts(root, kubelet_config)
    if facts.container is not None:
        message = (f"{facts.container} exists: {root} is a container's root, whose /etc is not the node's; mount "
                   "the node's / (e.g. at /host) and run kgpu node prepare --root /host")
        if apply:
            raise ConfigError(f"refusing to write: {message}")
        typer.echo(f"note: {message}")
    options = global_options(ctx)
    plan = plan_prepare(facts, gpu_facts(options.open_backend),
                        str(options.driver_root) if options.driver_root else None)
    if not plan.steps:
        typer.echo("Nothing to do: this node already has every fix kgpu node prepare makes.")
    for number, step in enumerate(plan.steps, 1):
        typer.echo(f"[{number}/{len(plan.steps)}] {step.check_id}: {step.title}")
        if not apply:
            diff = step.diff()
            if diff:
                typer.echo(diff.rstrip("\n"))
    if apply and plan.steps:
        for done in apply_prepare(plan):
            typer.echo(done.describe())
    then = [cmd for step in plan.steps for cmd in step.then]
    then = [cmd for cmd in then if cmd != "reboot"] + (["reboot"] if "reboot" in then else [])
    if then:
        typer.echo("\nThen run, to make the changes take effect now:" if apply else
                   "\nAfter --apply, run to make the changes take effect now:")
        for cmd in dict.fromkeys(then):
            typer.echo(f"  {cmd}")
    for note in plan.notes:
        typer.echo(f"note: {note}")
    if plan.steps and not apply:
        typer.echo("\nDry run: nothing written. Run again with --apply to write these changes.")
