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
        "/etc/crio/crio.conf.d/99-nvidia.toml. An empty value edits the main file (as --no-drop-in).",
        metavar="PATH",
    ),
]
NoDropInOpt = Annotated[
    bool, typer.Option("--no-drop-in", help="Edit the main config file instead of writing a drop-in.")
]
NameOpt = Annotated[
    str,
    typer.Option("--nvidia-runtime-name", help="The name the NVIDIA runtime gets in the config.", metavar="NAME"),
]
RootOpt = Annotated[
    Path,
    typer.Option("--root", help="Filesystem root every path resolves under, as in a chroot (for a host mounted "
                 "at /host); it must exist.", metavar="DIR"),
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
    nvidia_runtime_name: NameOpt = "nvidia",
    set_as_default: Annotated[
        bool,
        typer.Option("--set-as-default", "--nvidia-set-as-default",
                     help="Make nvidia the default runtime (every pod goes through it). Without it, a default "
                     "that names the NVIDIA runtime is removed, as nvidia-ctk does."),
    ] = False,
    cdi: Annotated[bool, typer.Option("--cdi", "--cdi.enabled", "--cdi.enable", "--enable-cdi",
                                      help="Enable CDI (containerd: enable_cdi, cdi_spec_dirs; "
                                      "docker: features.cdi).")] = False,
    driver_root: Annotated[
        str | None,
        typer.Option("--driver-root", help="Driver root to record as nvidia-container-cli.root in "
                     "/etc/nvidia-container-runtime/config.toml (e.g. /run/nvidia/driver).", metavar="DIR"),
    ] = None,
    nvidia_runtime_path: Annotated[
        str | None,
        typer.Option("--nvidia-runtime-path", "--runtime-path", help="The NVIDIA runtime executable. Default: "
                     "/usr/bin/nvidia-container-runtime (docker: nvidia-container-runtime on its PATH).",
                     metavar="PATH"),
    ] = None,
    config_version: VersionOpt = None,
    config_mode: Annotated[
        str | None,
        typer.Option("--config-mode", help="nvidia-ctk's: config-file (the default, also 'config'). The "
                     "deprecated oci-hook mode is not supported; other values are ignored, as nvidia-ctk does.",
                     metavar="MODE"),
    ] = None,
    config_source: Annotated[
        str,
        typer.Option("--config-source", help="nvidia-ctk's: file (the default) or command. kgpu always reads the "
                     "files themselves, following imports and drop-ins as the runtime does.", metavar="SOURCE"),
    ] = "file",
    executable_path: Annotated[
        str | None,
        typer.Option("--executable-path", help="nvidia-ctk's: the runtime binary for --config-source command "
                     "(accepted; kgpu reads the files).", metavar="PATH"),
    ] = None,
    hook_path: Annotated[
        str | None,
        typer.Option("--nvidia-runtime-hook-path", help="nvidia-ctk's: the OCI hook for --config-mode oci-hook "
                     "(accepted; that mode is not supported).", metavar="PATH"),
    ] = None,
    oci_hook_path: Annotated[
        str | None,
        typer.Option("--oci-hook-path", help="nvidia-ctk's: where --config-mode oci-hook writes its hook "
                     "(accepted; that mode is not supported).", metavar="PATH"),
    ] = None,
    root: RootOpt = Path("/"),
    dry_run: DryRunOpt = False,
) -> None:
    """Add the nvidia runtime to a container runtime's config, all files or none.

    containerd gets a drop-in (/etc/containerd/conf.d/99-nvidia.toml) imported from its main config,
    as nvidia-ctk ≥ 1.18 does; k3s and RKE2 are detected and their config template is written instead.
    Files are written through symlinks with their mode and owner; the previous content is kept as
    FILE.kgpu.bak and, the first time, the original as FILE.kgpu.orig (which unconfigure puts back).
    Running it twice changes nothing the second time. nvidia-ctk's flags are accepted as it spells them.

    Examples:

      kgpu runtime configure --runtime containerd --dry-run

      kgpu runtime configure --runtime containerd --set-as-default --cdi

      kgpu runtime configure --runtime docker --set-as-default

      kgpu runtime configure --runtime crio
    """
    from kgpu.errors import ConfigError
    from kgpu.fsio import check_root
    from kgpu.runtime import ConfigureRequest, plan_configure

    root = check_root(root)
    notes = []
    if config_mode in ("oci-hook", "hook"):
        raise ConfigError(f"--config-mode {config_mode}: the OCI hook mode (deprecated in nvidia-ctk) is not "
                          "supported; kgpu configures the runtime's config file (--config-mode config-file)")
    if config_mode not in (None, "config-file", "config"):
        notes.append(f"ignoring unsupported --config-mode {config_mode!r} (as nvidia-ctk does): using config-file")
    if config_source not in ("file", "command"):
        raise ConfigError(f"--config-source {config_source!r}: allowed values are file and command")
    if config_source == "command" or executable_path:
        notes.append("kgpu reads the runtime's config files (main file, imports, drop-ins) itself: "
                     "--config-source command and --executable-path change nothing")
    if hook_path or oci_hook_path:
        notes.append("--nvidia-runtime-hook-path and --oci-hook-path only matter to --config-mode oci-hook")
    if drop_in_config == "":
        drop_in_config, no_drop_in = None, True  # nvidia-ctk: an empty drop-in path edits the main file
    req = ConfigureRequest(
        runtime=runtime, config=config, drop_in=drop_in_config, no_drop_in=no_drop_in,
        set_as_default=set_as_default, cdi=cdi,
        driver_root=driver_root or _global_driver_root(ctx), runtime_path=nvidia_runtime_path,
        runtime_name=nvidia_runtime_name, config_version=config_version,
    )
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    _run(plan_configure(req, root), req, dry_run, "configured")


@runtime_app.command("unconfigure")
def unconfigure(
    runtime: RuntimeOpt = "containerd",
    config: ConfigOpt = None,
    drop_in_config: DropInOpt = None,
    no_drop_in: NoDropInOpt = False,
    nvidia_runtime_name: NameOpt = "nvidia",
    root: RootOpt = Path("/"),
    dry_run: DryRunOpt = False,
) -> None:
    """Remove the nvidia runtime again: delete the drop-in, drop its import, unset the default.

    A file kgpu changed is put back byte for byte from its FILE.kgpu.orig when what is left means the
    same as that original; otherwise only kgpu's keys are removed (your later edits stay).

    Examples:

      kgpu runtime unconfigure --runtime containerd --dry-run

      kgpu runtime unconfigure --runtime docker
    """
    from kgpu.fsio import check_root
    from kgpu.runtime import ConfigureRequest, plan_unconfigure

    root = check_root(root)
    if drop_in_config == "":
        drop_in_config, no_drop_in = None, True
    req = ConfigureRequest(runtime=runtime, config=config, drop_in=drop_in_config, no_drop_in=no_drop_in,
                           runtime_name=nvidia_runtime_name)
    _run(plan_unconfigure(req, root), req, dry_run, "unconfigured")


def _global_driver_root(ctx: typer.Context) -> str | None:
    """The host's driver root when one was named before the command (--driver-root, NVIDIA_DRIVER_ROOT)."""
    return global_options(ctx).named_driver_root()


def _run(plan: RuntimePlan, req: ConfigureRequest, dry_run: bool, verb: str) -> None:
    from kgpu.runtime import apply_plan

    for note in plan.notes:
        typer.echo(f"note: {note}", err=True)
    if not plan.changed:
        typer.echo(f"{req.runtime}: already {verb}; nothing to write")
        return
    if dry_run:
        typer.echo(plan.diff(), nl=False)
        typer.echo("(dry run: nothing written; run without --dry-run to apply)", err=True)
        return
    for done in apply_plan(plan):
        typer.echo(done.describe())
    if plan.restart_command:
        typer.echo(f"restart {req.runtime} to use it: {plan.restart_command}")
