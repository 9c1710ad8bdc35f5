"""``kgpu dra-plugin``: the node's GPUs through Dynamic Resource Allocation, with shares the driver enforces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kgpu.cli.state import global_options

_PANEL_KUBE = "Kubernetes (NVIDIA's gpu-kubelet-plugin flags where it has them)"
_PANEL_GPU = "GPUs, shares and health"
_PANEL_HOST = "Where things are on the host"


def register(app: typer.Typer) -> None:
    app.command("dra-plugin")(dra_plugin)


def _opt(help: str, envvar: str | list[str] | None, metavar: str, panel: str, show_default: bool = True) -> Any:
    return typer.Option(help=help, envvar=envvar, metavar=metavar, rich_help_panel=panel, show_default=show_default)


def dra_plugin(
    ctx: typer.Context,
    node_name: Annotated[
        str, _opt("The Kubernetes node this plugin runs on; its pool and ResourceSlice are named after it.",
                  "NODE_NAME", "NAME", _PANEL_KUBE, show_default=False)
    ] = "",
    driver_name: Annotated[
        str, _opt("The DRA driver name; keep NVIDIA's for claims and DeviceClasses written for NVIDIA's driver "
                  "to work unchanged. One driver of a name per node.", "KGPU_DRA_DRIVER_NAME", "NAME", _PANEL_KUBE)
    ] = "gpu.nvidia.com",
    kubeconfig: Annotated[
        Path | None, _opt("Kubeconfig for the API server (default: the in-cluster service account, then "
                          "$KUBECONFIG, then ~/.kube/config).", None, "FILE", _PANEL_KUBE, show_default=False)
    ] = None,
    cdi_root: Annotated[
        Path, _opt("Where the per-claim CDI specs are written (containerd and CRI-O read /etc/cdi and /var/run/cdi).",
                   "CDI_ROOT", "DIR", _PANEL_KUBE)
    ] = Path("/var/run/cdi"),
    kubelet_registrar_directory_path: Annotated[
        Path, _opt("The kubelet's plugin registration directory.", "KUBELET_REGISTRAR_DIRECTORY_PATH", "DIR",
                   _PANEL_KUBE)
    ] = Path("/var/lib/kubelet/plugins_registry"),
    kubelet_plugins_directory_path: Annotated[
        Path, _opt("Where the plugin keeps its socket (<dir>/<driver>/dra.sock) and its checkpoint.",
                   "KUBELET_PLUGINS_DIRECTORY_PATH", "DIR", _PANEL_KUBE)
    ] = Path("/var/lib/kubelet/plugins"),
    consumable_shares: Annotated[
        str, _opt("How whole GPUs are shared between claims (NVIDIA's flag): memory (a claim asking for no memory "
                  "gets the whole GPU; one asking for 30Gi shares it, its limits enforced through MPS), unlimited "
                  "(no memory request means none), N (also a 'shares' capacity of N), or disabled.",
                  "CONSUMABLE_SHARES", "MODE", _PANEL_GPU)
    ] = "memory",
    gpus: Annotated[
        str | None, _opt("This driver's GPUs, by index or UUID (comma-separated); default all. Needed when a "
                         "classic device plugin serves the node's other GPUs.", "KGPU_DRA_GPUS", "LIST", _PANEL_GPU,
                         show_default=False)
    ] = None,
    unhealthy_devices: Annotated[
        str, _opt("What an unhealthy device becomes: remove (it leaves the ResourceSlice) or taint (it stays with "
                  "a NoSchedule device taint <driver>/xid or <driver>/gpu-lost).", "KGPU_DRA_UNHEALTHY_DEVICES",
                  "MODE", _PANEL_GPU)
    ] = "remove",
    health_recovery_window: Annotated[
        str, _opt("An unhealthy GPU is healthy again once it answers probes and no fatal event came for this "
                  "long (5m, 90s, 1h; 0 disables recovery).", "KGPU_HEALTH_RECOVERY_WINDOW", "DURATION", _PANEL_GPU)
    ] = "5m",
    rescan_interval: Annotated[
        str, _opt("How often the GPUs are read again, so a new MIG layout reaches the ResourceSlice (0: never).",
                  "KGPU_DRA_RESCAN_INTERVAL", "DURATION", _PANEL_GPU)
    ] = "60s",
    mps_root: Annotated[
        Path, _opt("Host directory of the MPS daemons' pipes, logs and status (as kgpu mps-daemon lays it out).",
                   "MPS_ROOT", "DIR", _PANEL_GPU)
    ] = Path("/run/kgpu/mps"),
    mps_shm_dir: Annotated[
        Path | None, _opt("Host directory MPS clients get as /dev/shm: the /dev/shm the daemons this plugin starts "
                          "see (default <mps-root>/shm, which the chart mounts at the plugin's /dev/shm; on a host "
                          "run, /dev/shm).", "KGPU_DRA_MPS_SHM_DIR", "DIR", _PANEL_GPU, show_default=False)
    ] = None,
    mps_control_binary: Annotated[
        Path | None, _opt("nvidia-cuda-mps-control (default: under the driver root, then PATH).",
                          "KGPU_MPS_CONTROL_BINARY", "PATH", _PANEL_GPU, show_default=False)
    ] = None,
    kubelet_device_plugins_dir: Annotated[
        Path, _opt("Where classic device plugins' sockets are (to refuse sharing GPUs with one).",
                   "KGPU_KUBELET_DIR", "DIR", _PANEL_HOST)
    ] = Path("/var/lib/kubelet/device-plugins"),
    device_plugin_state_file: Annotated[
        Path, _opt("kgpu device plugin's state file, which says which GPUs it serves.", "KGPU_DP_STATE_FILE",
                   "FILE", _PANEL_HOST)
    ] = Path("/run/kgpu/device-plugin/state.json"),
    host_root: Annotated[
        Path, _opt("Where the host's / is seen by this process (the driver's files and /sys are read under it).",
                   "HOST_ROOT", "DIR", _PANEL_HOST)
    ] = Path("/"),
    nvidia_dev_root: Annotated[
        str | None, _opt("Root of the /dev/nvidia* nodes on the host (default: the driver root, kgpu --driver-root).",
                         "NVIDIA_DEV_ROOT", "DIR", _PANEL_HOST, show_default=False)
    ] = None,
    healthz: Annotated[
        str, _opt("Serve /healthz on HOST:PORT (:8082 for every address): 200 while every loop of the plugin "
                  "works. Empty: no endpoint.", "KGPU_HEALTHZ", "ADDRESS", _PANEL_HOST, show_default=False)
    ] = "",
    nvidia_cdi_hook_path: Annotated[
        str, _opt("nvidia-cdi-hook on the host, for the CDI specs' ldcache and symlink hooks.",
                  "NVIDIA_CDI_HOOK_PATH", "PATH", _PANEL_HOST)
    ] = "/usr/bin/nvidia-cdi-hook",
) -> None:
    """Serve the node's GPUs through Dynamic Resource Allocation (resource.k8s.io/v1) as a kubelet plugin.

    Publishes the GPUs and MIG devices in a ResourceSlice with the names and attributes of NVIDIA's driver.

    Prepares claims into per-claim CDI specs under --cdi-root; a checkpoint keeps a restart from losing any.

    Shares: a claim may ask for part of a GPU's memory and, in NVIDIA's GpuConfig, a share of its SMs.

    kgpu prepares such a claim as an MPS client of the GPU's daemon with those limits, which the driver enforces.

    XID, ECC and lost-GPU events take a GPU out of the ResourceSlice and reach the kubelet's health stream.

    Refuses to start beside a classic device plugin serving the same GPUs. Stops cleanly on SIGTERM.

    Examples:

      kgpu dra-plugin --node-name "$NODE_NAME"

      kgpu --simulate h100x8 dra-plugin --node-name lab-node --kubeconfig lab.conf

      kgpu dra-plugin --node-name node-1 --gpus 4,5,6,7 \\
        --consumable-shares disabled
    """
    from kgpu.deviceplugin.health import parse_duration
    from kgpu.dra.serve import DraPluginSettings, check, serve

    settings = check(DraPluginSettings(
        options=global_options(ctx),
        driver=driver_name,
        node_name=node_name,
        kubeconfig=kubeconfig,
        registry_dir=kubelet_registrar_directory_path,
        plugins_dir=kubelet_plugins_directory_path,
        cdi_root=cdi_root,
        gpus=tuple(g.strip() for g in gpus.split(",") if g.strip()) if gpus else None,
        consumable_shares=consumable_shares,
        unhealthy=unhealthy_devices,
        recovery_window=parse_duration(health_recovery_window, "--health-recovery-window"),
        rescan_interval=parse_duration(rescan_interval, "--rescan-interval"),
        mps_root=mps_root,
        mps_shm_dir=mps_shm_dir,
        mps_control_binary=mps_control_binary,
        device_plugins_dir=kubelet_device_plugins_dir,
        device_plugin_state_file=device_plugin_state_file,
        host_root=host_root,
        nvidia_dev_root=nvidia_dev_root,
        nvidia_cdi_hook_path=nvidia_cdi_hook_path,
        healthz=healthz,
    ))
    serve(settings)
