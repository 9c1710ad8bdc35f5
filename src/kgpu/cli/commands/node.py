"""``kgpu node prepare``: apply the doctor's safe fixes to this node (a dry-run plan unless --apply)."""

from __future__ import annotations

import json
import threading
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

      kgpu node prepare          # show the plan (unified diffs), write nothing

      kgpu node prepare --apply
    """
    from kgpu.cli.state import global_options
    from kgpu.doctor.gather import gpu_facts
    from kgpu.errors import ConfigError
    from kgpu.fsio import check_root
    from kgpu.host.facts import read_host_facts
    from kgpu.prepare import apply_prepare, plan_prepare

    root = check_root(root)

    facts = read_host_facts(root, kubelet_config)
    if facts.container is not None:
        message = (f"{facts.container} exists: {root} is a container's root, whose /etc is not the node's; mount "
                   "the node's / (e.g. at /host) and run kgpu node prepare --root /host")
        if apply:
            raise ConfigError(f"refusing to write: {message}")
        typer.echo(f"note: {message}")
    options = global_options(ctx)
    driver_root = options.driver_root()
    plan = plan_prepare(facts, gpu_facts(options.open_backend), driver_root.host if driver_root.explicit else None)
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


REPORT_HELP = (
    "Report this node's GPU stages on its Node object, as the kgpu-validator DaemonSet does.\n\n"
    "Every interval it runs kgpu validate's node steps (driver, NVML, device nodes, container "
    'runtime, device plugin and, on a real GPU, the CUDA kernel) and writes four Node conditions, '
    'KgpuDriver, KgpuRuntime, KgpuDevicePlugin and KgpuValidation, each with its evidence and, when '
    'failing, the exact fix after "Fix:". kubectl describe node shows them; kgpu status and the '
    "operator's ClusterPolicy status read them. SIGTERM removes the conditions and exits.\n\n"
    'Examples:\n\n'
    'kgpu node report --node "$NODE_NAME" --root /host --interval 30s\n\n'
    'kgpu --simulate h100x8 node report --node lab-node --once'
)


@node_app.command("report", help=REPORT_HELP)
def report(
    ctx: typer.Context,
    node: Annotated[
        str, typer.Option(help="This node's name in the cluster.", envvar="NODE_NAME", metavar="NAME")
    ],
    root: Annotated[
        Path, typer.Option(help="The node's filesystem root (the host's / mounted at /host in a pod).",
                           metavar="DIR")
    ] = Path("/"),
    interval: Annotated[
        str, typer.Option(help="How often to check and report: 30s, 1m, 90.", metavar="DURATION")
    ] = "30s",
    once: Annotated[bool, typer.Option("--once", help="Report once and exit (0 when every stage passed).")]
    = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config).", envvar="KUBECONFIG",
                     metavar="PATH"),
    ] = None,
) -> None:
    """Report this node's GPU stages on its Node object, as the kgpu-validator DaemonSet does."""

    from kgpu.cli.state import global_options
    from kgpu.daemon import StopSignals
    from kgpu.labels.daemon import parse_duration
    from kgpu.labels.node import kube_client
    from kgpu.validate import ValidateOptions
    from kgpu.validate import validate as run_validation
    from kgpu.validate.report import (
        NODE_SKIPS,
        SIMULATED_SKIPS,
        now_rfc3339,
        patch_conditions,
        remove_conditions,
        run_report,
        stage_conditions,
    )

    seconds = parse_duration(interval, "--interval")
    g = global_options(ctx)
    simulated = g.backend == "simulated" or (g.backend == "auto" and bool(g.simulate))
    driver_root = g.driver_root()
    opts = ValidateOptions(root=root, skip=SIMULATED_SKIPS if simulated else NODE_SKIPS, node=node,
                           kubeconfig=kubeconfig, driver_root=driver_root.view if driver_root.explicit else None,
                           simulated=simulated)
    client = kube_client(kubeconfig)

    def check() -> list[dict[str, object]]:
        return stage_conditions(run_validation(opts, g.open_backend), simulated, now_rfc3339())

    if once:
        conditions = check()
        patch_conditions(client, node, conditions)
        typer.echo(json.dumps(conditions, indent=2))
        raise typer.Exit(0 if all(c["status"] == "True" for c in conditions) else 1)
    stop = threading.Event()
    with StopSignals(stop):  # the daemon runtime's signal handling: heard at once, a deadline on stopping
        run_report(check, lambda c: patch_conditions(client, node, c), seconds, stop,
                   withdraw=lambda: remove_conditions(client, node))
