"""``kgpu runtime configure|unconfigure``: add or remove the NVIDIA runtime in containerd, docker or CRI-O."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kgpu.cli.state import global_options

if TYPE_CHECKING:
    from kgpu.runtime import ConfigureRequest, RuntimePlan

runtime_app = typer.Typer(
    name="runtime",
    help="Configure the container runtime (containerd, docker, CRI-O) for NVIDIA GPUs, as nvidia-ctk does.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(runtime_app)


RuntimeOpt = Annotated[str, typer.Option("--runtime", help="containerd, docker or crio.", metavar="NAME")]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        help="Main config file (node path). Default: /etc/containerd/config.toml, /etc/docker/daemon.json, "
        "/etc/crio/crio.conf; on k3s/RKE2 their config(-v3).toml.tmpl template.",
        metavar="PATH",
    ),
]
DropInOpt = Annotated[
    str | None,
    typer.Option(
        "--drop-in-config",
        help="Drop-in file to write. Default: /etc/containerd/conf.d/99-nvidia.toml, "
        "/etc/crio/crio.conf.d/99-nvidia.toml.",
        metavar="PATH",
    ),
]
NoDropInOpt = Annotated[
    bool, typer.Option("--no-drop-in", help="Edit the main config file instead of writing a drop-in.")
]
RootOpt = Annotated[
    Path,
    typer.Option("--root", help="Filesystem root every path resolves under (for a host mounted at /host).",
                 metavar="DIR"),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the unified diff; write nothing.")]
VersionOpt = Annotated[
    int | None,
    typer.Option("--config-version", help="containerd config version for a file that does not exist yet: "
                 "2 (containerd 1.x, the default) or 3 (containerd 2.x).", metavar="N"),
]


@runtime_app.command("configure")
def configure(
    ctx: typer.Context,
    runtime: RuntimeOpt = "containerd",
    config: ConfigOpt = None,
    drop_in_config: DropInOpt = None,
    no_drop_in: NoDropInOpt = False,
    set_as_default: Annotated[
        bool, typer.Option("--set-as-default", help="Make nvidia the default runtime (every pod goes through it).")
    ] = False,
    cdi: Annotated[bool, typer.Option("--cdi", help="Enable CDI (containerd: enable_cdi, cdi_spec_dirs; "
                                      "docker: features.cdi).")] = False,
    driver_root: Annotated[
        str | None,
        typer.Option("--driver-root", help="Driver root to record as nvidia-container-cli.root in "
                     "/etc/nvidia-container-runtime/config.toml (e.g. /run/nvidia/driver).", metavar="DIR"),
    ] = None,
    nvidia_runtime_path: Annotated[
        str | None,
        typer.Option("--nvidia-runtime-path", help="The NVIDIA runtime executable. Default: "
                     "/usr/bin/nvidia-container-runtime (docker: nvidia-container-runtime on its PATH).",
                     metavar="PATH"),
    ] = None,
    config_version: VersionOpt = None,
    root: RootOpt = Path("/"),
    dry_run: DryRunOpt = False,
) -> None:
    """Add the [bold]nvidia[/bold] runtime to a container runtime's config, atomically, with a .kgpu.bak backup.

    containerd gets a drop-in (/etc/containerd/conf.d/99-nvidia.toml) imported from its main config,
    as nvidia-ctk ≥ 1.18 does; k3s and RKE2 are detected and their config template is written instead.
    Running it twice changes nothing the second time.

    Examples:

      kgpu runtime configure --runtime containerd --dry-run

      kgpu runtime configure --runtime containerd --set-as-default --cdi

      kgpu runtime configure --runtime docker --set-as-default

      kgpu runtime configure --runtime crio
    """
    from kgpu.runtime import ConfigureRequest, plan_configure

    req = ConfigureRequest(
        runtime=runtime, config=config, drop_in=drop_in_config, no_drop_in=no_drop_in,
        set_as_default=set_as_default, cdi=cdi,
        driver_root=driver_root or _global_driver_root(ctx), runtime_path=nvidia_runtime_path,
        config_version=config_version,
    )
    _run(plan_configure(req, root), req, dry_run, "configured")


@runtime_app.command("unconfigure")
def unconfigure(
    runtime: RuntimeOpt = "containerd",
    config: ConfigOpt = None,
    drop_in_config: DropInOpt = None,
    no_drop_in: NoDropInOpt = False,
    root: RootOpt = Path("/"),
    dry_run: DryRunOpt = False,
) -> None:
    """Remove the [bold]nvidia[/bold] runtime again: delete the drop-in, drop its import, reset the default runtime.

    Examples:

      kgpu runtime unconfigure --runtime containerd --dry-run

      kgpu runtime unconfigure --runtime docker
    """
    from kgpu.runtime import ConfigureRequest, plan_unconfigure

    req = ConfigureRequest(runtime=runtime, config=config, drop_in=drop_in_config, no_drop_in=no_drop_in)
    _run(plan_unconfigure(req, root), req, dry_run, "unconfigured")


def _global_driver_root(ctx: typer.Context) -> str | None:
    value = global_options(ctx).driver_root
    return str(value) if value is not None else None


def _run(plan: RuntimePlan, req: ConfigureRequest, dry_run: bool, verb: str) -> None:
    from kgpu.runtime import BACKUP_SUFFIX, apply_plan

    for note in plan.notes:
        typer.echo(f"note: {note}", err=True)
    if not plan.changed:
        typer.echo(f"{req.runtime}: already {verb}; nothing to write")
        return
    if dry_run:
        typer.echo(plan.diff(), nl=False)
        typer.echo("(dry run: nothing written; run without --dry-run to apply)", err=True)
        return
    for change in apply_plan(plan):
        backup = f" (previous content in {change.node_path}{BACKUP_SUFFIX})" if change.old_text is not None else ""
        typer.echo(f"{change.action}d {change.node_path}{backup}")
    if plan.restart_command:
        typer.echo(f"restart {req.runtime} to use it: {plan.restart_command}")
