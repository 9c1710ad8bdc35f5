"""``kgpu scheduler-extender``: the kube-scheduler HTTP extender for dynamically shared GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kgpu.errors import ConfigError

_POLICY_HELP = "binpack (fill the busiest first) or spread (the idlest first)."


def register(app: typer.Typer) -> None:
    app.command("scheduler-extender")(scheduler_extender)


def scheduler_extender(
    http_bind: Annotated[
        str,
        typer.Option("--http-bind", "--http_bind", metavar="HOST:PORT",
                     help="Where kube-scheduler reaches the extender (its urlPrefix): POST /filter, /prioritize, "
                          "/bind. Keep it on 127.0.0.1 beside kube-scheduler in one pod."),
    ] = "127.0.0.1:8080",
    metrics_bind_address: Annotated[
        str,
        typer.Option("--metrics-bind-address", metavar="HOST:PORT",
                     help="Prometheus metrics (HAMi's names: per-GPU allocation, per-container shares) on "
                          "/metrics; empty turns them off."),
    ] = ":9395",
    node_scheduler_policy: Annotated[
        str,
        typer.Option("--node-scheduler-policy", metavar="POLICY",
                     help="Cluster default for choosing among nodes: " + _POLICY_HELP +
                          " A pod overrides it with the annotation hami.io/node-scheduler-policy."),
    ] = "binpack",
    gpu_scheduler_policy: Annotated[
        str,
        typer.Option("--gpu-scheduler-policy", metavar="POLICY",
                     help="Cluster default for choosing among a node's GPUs: " + _POLICY_HELP +
                          " A pod overrides it with the annotation hami.io/gpu-scheduler-policy."),
    ] = "spread",
    default_cores: Annotated[
        int,
        typer.Option("--default-cores", metavar="PERCENT", min=0, max=100,
                     help="Share of SMs for a container that asks for GPU memory but not for nvidia.com/gpucores "
                          "(HAMi's defaultCores). 0: no guaranteed share, placed only where SMs are left."),
    ] = 0,
    bind_wait: Annotated[
        float,
        typer.Option("--bind-wait", metavar="SECONDS", min=1, max=300,
                     help="How long a bind waits for the node's previous pod to be allocated by its kubelet before "
                          "giving the pod back to kube-scheduler. Keep it below the extender's httpTimeout."),
    ] = 20.0,
    legacy_metrics: Annotated[
        bool,
        typer.Option("--legacy-metrics", help="Also emit HAMi's older metric names (GPUDeviceMemoryAllocated, "
                                              "vGPUMemoryAllocated, vGPU_device_memory_limit_in_bytes, ...)."),
    ] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", metavar="FILE",
                     help="Kubeconfig (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)."),
    ] = None,
) -> None:
    """Place pods that ask for GPU shares (nvidia.com/gpu with nvidia.com/gpumem, gpumem-percentage or gpucores,
    HAMi's names) on the GPUs of nodes whose device plugin shares them dynamically through MPS.

    Serves kube-scheduler's extender verbs filter, prioritize and bind (nodeCacheCapable). The pods and nodes come
    from the API server (a restart rebuilds everything from them); each pod's GPU assignment is written onto it
    (hami.io/vgpu-devices-allocated) before it is bound. A pod that fits nowhere stays Pending with an event naming
    the largest free share of each node. SIGTERM stops it.
    """
    from kgpu.scheduler.daemon import ExtenderOptions, run
    from kgpu.scheduler.extender import ExtenderConfig
    from kgpu.scheduler.names import POLICIES

    for flag, value in (("--node-scheduler-policy", node_scheduler_policy),
                        ("--gpu-scheduler-policy", gpu_scheduler_policy)):
        if value not in POLICIES:
            raise ConfigError(f"{flag} {value!r}: allowed: {', '.join(POLICIES)}")
    config = ExtenderConfig(node_policy=node_scheduler_policy, gpu_policy=gpu_scheduler_policy,  # type: ignore[arg-type]
                            default_cores=default_cores, bind_wait=bind_wait)
    run(ExtenderOptions(http_bind=http_bind, metrics_bind=metrics_bind_address, config=config,
                        legacy_metrics=legacy_metrics, kubeconfig=kubeconfig))
