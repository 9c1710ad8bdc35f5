"""``kgpu cdi generate|validate``: the CDI spec for the node's GPUs, as nvidia-ctk writes it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kgpu.cli.state import global_options

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
        str, typer.Option("--dev-root", help="Root of the /dev holding the NVIDIA device nodes.", metavar="DIR")
    ] = "/",
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the spec here (e.g. /etc/cdi/nvidia.yaml; an absolute path "
                     "resolves under --root) instead of printing it.", metavar="FILE"),
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
        str, typer.Option("--nvidia-cdi-hook-path", help="The nvidia-cdi-hook binary on the node.", metavar="PATH")
    ] = "/usr/bin/nvidia-cdi-hook",
    root: RootOpt = Path("/"),
) -> None:
    """Generate the [bold]nvidia.com/gpu[/bold] CDI spec: one device per GPU and MIG device, plus [bold]all[/bold].

    Devices come from the GPU backend (NVML, or --simulate); device nodes, driver libraries and
    binaries are read under --root. Every host path in the spec is checked to exist before it is
    written; the file is written atomically.

    Examples:

      kgpu cdi generate --output /etc/cdi/nvidia.yaml

      kgpu cdi generate --driver-root /usr/local/nvidia --device-name-strategy both

      kgpu --simulate a100-mig cdi generate --root /tmp/node --format json
    """
    from kgpu.cdi import CdiOptions, generate_spec, render, validate
    from kgpu.errors import ConfigError
    from kgpu.fsio import write_atomic

    strategies = {"index": ("index",), "uuid": ("uuid",), "both": ("index", "uuid")}.get(device_name_strategy)
    if strategies is None:
        raise ConfigError(f"--device-name-strategy {device_name_strategy!r}: allowed index, uuid, both")
    if fmt is None:
        fmt = "json" if output and output.endswith(".json") else "yaml"
    if fmt not in ("yaml", "json"):
        raise ConfigError(f"--format {fmt!r}: allowed yaml, json")
    opts = global_options(ctx)
    chosen_root = driver_root or (str(opts.driver_root) if opts.driver_root else None) or _find_driver_root(root)
    backend = opts.open_backend()
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    result = generate_spec(
        inventory,
        CdiOptions(root=root, driver_root=chosen_root, dev_root=dev_root, strategies=strategies, hook_path=hook_path),
    )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    check = validate(result.spec.to_json(), root)
    for warning in check.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not check.ok:
        raise ConfigError("generated spec is invalid: " + "; ".join(check.errors))
    text = render(result.spec, fmt)
    if output is None:
        sys.stdout.write(text)
        return
    target = root / output.lstrip("/") if output.startswith("/") else Path(output)
    write_atomic(target, text)
    devices = len(result.spec.devices)
    typer.echo(f"wrote {output}: {devices} devices, {len(result.spec.edits.mounts)} mounts, "
               f"driver {result.driver_version or 'unknown'} from {chosen_root}", err=True)


@cdi_app.command("validate")
def validate_cmd(
    spec_file: Annotated[Path, typer.Argument(help="A CDI spec (YAML or JSON).", metavar="FILE")],
    root: RootOpt = Path("/"),
) -> None:
    """Check a CDI spec: schema shape, cdiVersion, and that every device node and mount source exists.

    Exit code 1 when the spec is invalid. Example: kgpu cdi validate /etc/cdi/nvidia.yaml
    """
    import yaml

    from kgpu.cdi import validate
    from kgpu.errors import ConfigError, KgpuError

    try:
        doc = yaml.safe_load(spec_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{spec_file}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{spec_file}{where}: not valid YAML/JSON") from None
    check = validate(doc, root)
    for warning in check.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not check.ok:
        raise KgpuError(f"{spec_file}: invalid CDI spec: " + "; ".join(check.errors))
    typer.echo(f"{spec_file}: valid CDI spec ({doc.get('kind')}, cdiVersion {doc.get('cdiVersion')}, "
               f"{len(doc.get('devices') or [])} devices)")


def _find_driver_root(root: Path) -> str:
    from kgpu.host.driverroot import CUDA_SONAME, NVML_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_library

    for candidate in WELL_KNOWN_DRIVER_ROOTS:
        base = root / str(candidate).lstrip("/")
        if find_library(base, NVML_SONAME) or find_library(base, CUDA_SONAME):
            return str(candidate)
    return "/"
