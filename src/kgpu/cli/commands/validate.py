"""``kgpu validate``: check every link from the kernel driver to a GPU pod; stop at the first broken one."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kgpu import __version__
from kgpu.cli.state import global_options

if TYPE_CHECKING:
    from kgpu.validate.result import StepResult


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    ctx: typer.Context,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON array: [{step, name, status, detail, fix}] for all 7 steps."
        ),
    ] = False,
    skip: Annotated[
        str | None,
        typer.Option(
            help="Steps not to run, by name or number: driver, nvml, device-nodes, cuda, runtime, "
            "device-plugin, pod (e.g. --skip runtime,6).",
            metavar="STEP,…",
        ),
    ] = None,
    gpu: Annotated[
        int | None,
        typer.Option(help="Only this GPU (nvidia-smi's index) for device nodes and CUDA.", metavar="N"),
    ] = None,
    pod: Annotated[
        bool,
        typer.Option(
            "--pod",
            help="Also create a pod requesting nvidia.com/gpu: 1 that runs the CUDA check, "
            "report its verdict and delete it.",
        ),
    ] = False,
    in_pod: Annotated[
        bool,
        typer.Option(
            "--in-pod", help="Run only the CUDA step (what the --pod pod runs inside its container)."
        ),
    ] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="Kubeconfig for --pod and the allocatable check (default: in-cluster, "
            "$KUBECONFIG, ~/.kube/config).",
            envvar="KUBECONFIG",
            metavar="PATH",
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="How long --pod waits for its pod: 120s, 2m, 90.", metavar="DURATION")
    ] = "120s",
    root: Annotated[
        Path,
        typer.Option(
            help="Read /proc, /dev, /etc and /var/lib/kubelet under this directory "
            "(a fixture tree, or the host's / mounted at /host).",
            metavar="DIR",
        ),
    ] = Path("/"),
    cuda_library: Annotated[
        Path | None,
        typer.Option(
            help="Use this libcuda.so.1 instead of searching the loader path and driver roots.",
            envvar="KGPU_CUDA_LIBRARY",
            metavar="PATH",
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            help="This node's name in the cluster (default: $NODE_NAME, then the hostname).",
            envvar="NODE_NAME",
            metavar="NAME",
        ),
    ] = None,
    image: Annotated[
        str, typer.Option(help="Image of the --pod pod (must contain kgpu).", envvar="KGPU_IMAGE", metavar="IMAGE")
    ] = f"kgpu:{__version__}",
    namespace: Annotated[
        str, typer.Option(help="Namespace of the --pod pod.", envvar="POD_NAMESPACE", metavar="NAME")
    ] = "default",
    runtime_class: Annotated[
        str | None,
        typer.Option(
            help="runtimeClassName of the --pod pod, e.g. nvidia when the NVIDIA runtime is not the default.",
            envvar="KGPU_RUNTIME_CLASS",
            metavar="NAME",
        ),
    ] = None,
    device_list_strategy: Annotated[
        str | None,
        typer.Option(
            help="The device plugin's device list strategy, which decides what step 5 checks: kgpu's "
            "driver-mounts needs no NVIDIA runtime or toolkit, the others do. Env: DEVICE_LIST_STRATEGY. Default: "
            "from --config-file, else the running plugin's state file, else envvar.",
            metavar="LIST",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(help="The device plugin's config file (its deviceListStrategy and nvidiaDriverRoot). "
                     "Env: CONFIG_FILE.", metavar="FILE"),
    ] = None,
) -> None:
    """Validate the GPU stack of this node, link by link, and say which link broke and how to fix it.

    Steps: 1 driver (kernel module, /proc/driver/nvidia/version) · 2 nvml (inventory, every GPU answers)
    · 3 device-nodes (/dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidiaN openable) · 4 cuda (vectorAdd of
    50 000 floats through libcuda's driver API, checked element by element: "Test PASSED" per GPU)
    · 5 runtime (containerd/docker/CRI-O has the NVIDIA runtime; with kgpu's driver-mounts strategy, a
    working runtime and the driver files to mount, no toolkit) · 6 device-plugin (socket next to
    kubelet.sock; with API access, this machine's Node's allocatable nvidia.com/gpu) · 7 pod (--pod only).

    Exit code 0 only when every step that ran passed. On a simulated node the CUDA step is skipped.

    Examples:

      kgpu validate                                      # on a GPU node

      kgpu --driver-root /usr/local/nvidia validate --json

      kgpu validate --pod --kubeconfig ~/.kube/config \\
        --image registry.example/kgpu:0.1.0

      kgpu --simulate h100x8 validate --root tests/fixtures/validate/h100x8-node
    """
    from kgpu.fsio import check_root
    from kgpu.validate import ValidateOptions, exit_code, parse_duration, parse_skip
    from kgpu.validate import validate as run_validation

    root = check_root(root)
    g = global_options(ctx)
    driver_root = g.driver_root()
    opts = ValidateOptions(
        root=root,
        skip=parse_skip(skip),
        gpu=gpu,
        pod=pod,
        in_pod=in_pod,
        kubeconfig=kubeconfig,
        timeout_s=parse_duration(timeout),
        driver_root=driver_root.view if driver_root.explicit else None,
        cuda_library=cuda_library,
        node=node,
        image=image,
        namespace=namespace,
        runtime_class=runtime_class,
        device_list_strategy=device_list_strategy,
        config_file=config_file,
        simulated=g.backend == "simulated" or (g.backend == "auto" and bool(g.simulate)),
        simulate=g.simulate,
    )
    results = run_validation(opts, g.open_backend, None if as_json else _print_result)
    if as_json:
        json.dump([r.to_json() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        ran = [r for r in results if r.status in ("passed", "failed")]
        bad = [r for r in results if r.status == "failed"]
        verdict = f"FAILED at step {bad[0].step} ({bad[0].name})" if bad else "PASSED"
        ok = sum(r.status == "passed" for r in ran)
        typer.echo(f"validation {verdict}: {ok} of {len(ran)} step(s) that ran passed")
    raise typer.Exit(exit_code(results))


# Where a step's detail moves on to the next GPU: one line per GPU in the text output.
_PER_GPU = {"nvml": re.compile(r"(?:: |; )(?=\d+: )"), "cuda": re.compile(r"; (?=GPU \d+ )")}
_MARK = {"passed": "PASSED", "failed": "FAILED", "skipped": "skipped", "not-run": "not run"}


def _print_result(r: StepResult) -> None:
    head = f"[{r.step}/7] {r.name:<14} {_MARK[str(r.status)]:<8}"
    per_gpu = _PER_GPU.get(r.name)
    if per_gpu is not None and per_gpu.search(r.detail):
        first, *gpus = per_gpu.split(r.detail)
        typer.echo(f"{head} {first}")
        for line in gpus:
            typer.echo(f"      {line}")
    else:
        typer.echo(f"{head} {r.detail}")
    if r.fix:
        typer.echo(f"      fix: {r.fix}")
    sys.stdout.flush()
