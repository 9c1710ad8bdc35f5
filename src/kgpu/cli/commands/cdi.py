"""``kgpu cdi generate|validate``: the CDI spec for the node's GPUs, as nvidia-ctk writes it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kgpu.cli.state import global_options

if TYPE_CHECKING:
    from kgpu.fsio import Location

cdi_app = typer.Typer(
    name="cdi",
    help="CDI specs (Container Device Interface) for the node's GPUs: generate and validate.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(cdi_app)


RootOpt = Annotated[
    Path,
    typer.Option("--root", help="Filesystem root host paths are read under (e.g. /host); the spec names "
                 "paths as the node sees them.", metavar="DIR"),
]


@cdi_app.command("generate")
def generate(
    ctx: typer.Context,
    driver_root: Annotated[
        str | None,
        typer.Option("--driver-root", help="Where the driver's user-space files live on the node. Default: the "
                     "first of /, /usr/local/nvidia, /run/nvidia/driver that has libnvidia-ml.so.1.",
                     metavar="DIR"),
    ] = None,
    dev_root: Annotated[
        str | None,
        typer.Option("--dev-root", envvar="NVIDIA_CTK_DEV_ROOT",
                     help="Root of the /dev holding the NVIDIA device nodes. Default: the driver root, as "
                     "nvidia-ctk (a driver container keeps its /dev beside its libraries).", metavar="DIR"),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the spec here (e.g. /etc/cdi/nvidia.yaml; an absolute path "
                     "resolves under --root, a relative one from here) instead of printing it.", metavar="FILE"),
    ] = None,
    device_name_strategy: Annotated[
        str,
        typer.Option("--device-name-strategy", help="Device names: index (0, and 0:1 for MIG), uuid (GPU-…, "
                     "MIG-…) or both (default: what kgpu's device plugin names with either of its "
                     "device-id strategies).", metavar="STRATEGY"),
    ] = "both",
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="yaml or json. Default: from --output's extension, else yaml.",
                     metavar="FORMAT"),
    ] = None,
    hook_path: Annotated[
        str, typer.Option("--nvidia-cdi-hook-path", "--nvidia-ctk-path",
                          help="The nvidia-cdi-hook binary on the node.", metavar="PATH")
    ] = "/usr/bin/nvidia-cdi-hook",
    disable_hook: Annotated[
        list[str] | None,
        typer.Option("--disable-hook", "--disable-hooks",
                     help="Leave this hook out of the spec (repeat it; 'all' leaves every hook out): "
                     "create-symlinks, enable-cuda-compat, update-ldcache, disable-device-node-modification, "
                     "update-application-profile.", metavar="HOOK"),
    ] = None,
    vendor: Annotated[
        str, typer.Option("--vendor", "--cdi-vendor", help="The spec's vendor (kind vendor/class).", metavar="NAME")
    ] = "nvidia.com",
    device_class: Annotated[
        str, typer.Option("--class", "--cdi-class", help="The spec's class (kind vendor/class).", metavar="NAME")
    ] = "gpu",
    root: RootOpt = Path("/"),
) -> None:
    """Generate the nvidia.com/gpu CDI spec: one device per GPU and MIG device, plus all.

    Devices come from the GPU backend (NVML, or --simulate); device nodes, driver libraries and
    binaries are read under --root. Every host path in the spec is checked to exist before it is
    written. The hooks are those the node's nvidia-cdi-hook has. The file is written whole or not
    at all, through a symlink, its previous content kept as FILE.kgpu.bak.

    Examples:

      kgpu cdi generate --output /etc/cdi/nvidia.yaml

      kgpu cdi generate --device-name-strategy both --format json

      kgpu --simulate a100-mig cdi generate --root /tmp/node --format json
    """
    from kgpu.cdi import HOOKS, CdiOptions, generate_spec, render, validate
    from kgpu.errors import ConfigError
    from kgpu.fsio import FileChange, apply_changes, check_root, read_text_or_none

    root = check_root(root)
    strategies = {"index": ("index",), "uuid": ("uuid",), "both": ("index", "uuid")}.get(device_name_strategy)
    if strategies is None:
        raise ConfigError(f"--device-name-strategy {device_name_strategy!r}: allowed index, uuid, both")
    if fmt is None:
        fmt = "json" if output and output.endswith(".json") else "yaml"
    if fmt not in ("yaml", "json"):
        raise ConfigError(f"--format {fmt!r}: allowed yaml, json")
    disabled = frozenset(disable_hook or ())
    unknown = sorted(disabled - {*HOOKS, "all"})
    if unknown:
        raise ConfigError(f"--disable-hook {', '.join(unknown)}: allowed {', '.join(HOOKS)}, all")
    target = _spec_path(output, root) if output is not None else None
    opts = global_options(ctx)
    chosen_root = driver_root or opts.named_driver_root() or _find_driver_root(root)
    backend = opts.open_backend()
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    result = generate_spec(
        inventory,
        CdiOptions(root=root, driver_root=chosen_root, dev_root=dev_root, strategies=strategies, hook_path=hook_path,
                   disabled_hooks=disabled, kind=f"{vendor}/{device_class}"),
    )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    check = validate(result.spec.to_json(), root)
    for warning in check.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not check.ok:
        raise ConfigError("generated spec is invalid: " + "; ".join(check.errors))
    text = render(result.spec, fmt)
    if target is None:
        sys.stdout.write(text)
        return
    change = FileChange.of(target, read_text_or_none(target.real, output), text)
    applied = apply_changes([change])
    done = applied[0].describe() if applied else f"unchanged {target.named}"
    typer.echo(f"{done}: {len(result.spec.devices)} devices, {len(result.spec.edits.mounts)} mounts, "
               f"driver {result.driver_version or 'unknown'} from {chosen_root}", err=True)


@cdi_app.command("validate")
def validate_cmd(
    spec_file: Annotated[str, typer.Argument(help="A CDI spec (YAML or JSON); an absolute path resolves under "
                                             "--root, a relative one from here.", metavar="FILE")],
    root: RootOpt = Path("/"),
) -> None:
    """Check a CDI spec: schema shape, cdiVersion, and that every device node and mount source exists.

    Exit code 1 when the spec is invalid. Example: kgpu cdi validate /etc/cdi/nvidia.yaml
    """
    import yaml

    from kgpu.cdi import validate
    from kgpu.errors import ConfigError, KgpuError
    from kgpu.fsio import check_root, read_text

    root = check_root(root)
    where = _spec_path(spec_file, root)
    shown = str(where.named)
    try:
        doc = yaml.safe_load(read_text(where.real, shown))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{shown}{at}: not valid YAML/JSON") from None
    check = validate(doc, root)
    for warning in check.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not check.ok:
        raise KgpuError(f"{shown}: invalid CDI spec: " + "; ".join(check.errors))
    typer.echo(f"{shown}: valid CDI spec ({doc.get('kind')}, cdiVersion {doc.get('cdiVersion')}, "
               f"{len(doc.get('devices') or [])} devices)")


def _spec_path(path: str, root: Path) -> Location:
    """An absolute path is the node's (under --root, links followed as there); a relative one is from here."""
    from kgpu.fsio import locate

    if path.startswith("/"):
        return locate(root, path)
    return locate(Path("/"), os.path.abspath(path))


def _find_driver_root(root: Path) -> str:
    from kgpu.prepare.plan import find_driver_root

    return find_driver_root(root)
