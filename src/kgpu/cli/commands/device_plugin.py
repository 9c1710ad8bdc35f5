"""``kgpu device-plugin``: the kubelet device plugin daemon, with NVIDIA's flags and environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kgpu.cli.state import global_options

_PANEL_NVIDIA = "NVIDIA device plugin settings (flag > env var > config file > default)"
_PANEL_KGPU = "kgpu daemon settings"


def register(app: typer.Typer) -> None:
    app.command("device-plugin")(device_plugin)


def _str_flag(help: str, metavar: str) -> Any:
    return typer.Option(help=help, metavar=metavar, rich_help_panel=_PANEL_NVIDIA, show_default=False)


def _bool_flag(name: str, help: str) -> Any:
    return typer.Option(f"--{name}/--no-{name}", help=help, rich_help_panel=_PANEL_NVIDIA, show_default=False)


def device_plugin(
    ctx: typer.Context,
    config_file: Annotated[
        str | None, _str_flag("NVIDIA v1 config file (YAML). Env: CONFIG_FILE.", "FILE")
    ] = None,
    mig_strategy: Annotated[
        str | None,
        _str_flag(
            "none (whole GPUs), single (MIG devices as nvidia.com/gpu) or mixed (nvidia.com/mig-<profile>). "
            "Env: MIG_STRATEGY. Default: none.",
            "STRATEGY",
        ),
    ] = None,
    fail_on_init_error: Annotated[
        bool | None,
        _bool_flag(
            "fail-on-init-error",
            "Exit when NVML or the GPUs cannot be initialised; --no-… logs why and idles instead (for "
            "DaemonSets that also land on nodes without GPUs). Env: FAIL_ON_INIT_ERROR. Default: true.",
        ),
    ] = None,
    nvidia_driver_root: Annotated[
        str | None,
        _str_flag(
            "Root of the driver installation on the host: / or e.g. /run/nvidia/driver. "
            "Env: NVIDIA_DRIVER_ROOT. Default: /.",
            "DIR",
        ),
    ] = None,
    nvidia_dev_root: Annotated[
        str | None,
        _str_flag("Root of the /dev/nvidia* nodes on the host. Env: NVIDIA_DEV_ROOT. Default: the driver root.", "DIR"),
    ] = None,
    pass_device_specs: Annotated[
        bool | None,
        _bool_flag(
            "pass-device-specs",
            "Return the /dev/nvidia* device nodes in Allocate. Env: PASS_DEVICE_SPECS. Default: false.",
        ),
    ] = None,
    device_list_strategy: Annotated[
        str | None,
        _str_flag(
            "How allocated devices reach the runtime, comma-separated: envvar, volume-mounts, cdi-annotations, "
            "cdi-cri, or kgpu's driver-mounts (no container toolkit needed). Env: DEVICE_LIST_STRATEGY. "
            "Default: envvar.",
            "LIST",
        ),
    ] = None,
    device_id_strategy: Annotated[
        str | None, _str_flag("uuid or index. Env: DEVICE_ID_STRATEGY. Default: uuid.", "STRATEGY")
    ] = None,
    shared_devices_allocation_policy: Annotated[
        str | None,
        _str_flag(
            "How shared replicas are picked: distributed (least-used GPUs first) or packed (fill one GPU "
            "first). Env: SHARED_DEVICES_ALLOCATION_POLICY. Default: distributed.",
            "POLICY",
        ),
    ] = None,
    cdi_annotation_prefix: Annotated[
        str | None, _str_flag("Prefix of CDI annotation keys. Env: CDI_ANNOTATION_PREFIX.", "PREFIX")
    ] = None,
    nvidia_cdi_hook_path: Annotated[
        str | None, _str_flag("nvidia-cdi-hook / nvidia-ctk used in CDI specs. Env: NVIDIA_CDI_HOOK_PATH.", "PATH")
    ] = None,
    driver_root_ctr_path: Annotated[
        str | None,
        _str_flag(
            "Where the driver root is mounted in the plugin's container. Env: DRIVER_ROOT_CTR_PATH. "
            "Default: /driver-root.",
            "DIR",
        ),
    ] = None,
    device_discovery_strategy: Annotated[
        str | None, _str_flag("auto, nvml or tegra. Env: DEVICE_DISCOVERY_STRATEGY. Default: auto.", "STRATEGY")
    ] = None,
    mps_root: Annotated[str | None, _str_flag("Host directory for MPS pipes and logs. Env: MPS_ROOT.", "DIR")] = None,
    gds_enabled: Annotated[bool | None, _bool_flag("gds-enabled", "Set NVIDIA_GDS=enabled. Env: GDS_ENABLED.")] = None,
    mofed_enabled: Annotated[
        bool | None, _bool_flag("mofed-enabled", "Set NVIDIA_MOFED=enabled. Env: MOFED_ENABLED.")
    ] = None,
    kubelet_dir: Annotated[
        Path,
        typer.Option(
            help="The kubelet's device-plugins directory (holds kubelet.sock and our sockets).",
            envvar="KGPU_KUBELET_DIR",
            metavar="DIR",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = Path("/var/lib/kubelet/device-plugins"),
    health_recovery_window: Annotated[
        str,
        typer.Option(
            help="An unhealthy GPU becomes healthy again once it answers probes and no fatal event came "
            "for this long (e.g. 5m, 90s, 1h; 0 disables recovery).",
            envvar="KGPU_HEALTH_RECOVERY_WINDOW",
            metavar="DURATION",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = "5m",
    state_file: Annotated[
        Path,
        typer.Option(
            help="JSON snapshot of advertised devices, health and allocation counts (read by the exporter).",
            envvar="KGPU_DP_STATE_FILE",
            metavar="FILE",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = Path("/run/kgpu/device-plugin/state.json"),
) -> None:
    """Serve the node's GPUs to the kubelet (Device Plugin API v1beta1), as NVIDIA's plugin does.

    One socket and one registration per resource: nvidia.com/gpu, nvidia.com/mig-1g.10gb, nvidia.com/gpu.shared.

    Re-registers within a second when the kubelet restarts; stops cleanly on SIGTERM.

    XID and ECC failures reach the kubelet through ListAndWatch; a GPU that recovers is advertised healthy again.

    DP_DISABLE_HEALTHCHECKS and DP_ENABLE_HEALTHCHECKS work as in NVIDIA's plugin.

    Examples:

      kgpu device-plugin

      kgpu device-plugin --config-file /etc/kgpu/dp.yaml --mig-strategy mixed

      kgpu --simulate h100x8 device-plugin --kubelet-dir /tmp/dp \\
        --state-file /tmp/dp-state.json
    """
    import logging

    from kgpu.deviceplugin.health import parse_duration
    from kgpu.deviceplugin.service import DevicePluginSettings, check, serve
    from kgpu.handoff import hand_over
    from kgpu.process import log_memory

    opts = global_options(ctx)
    window = parse_duration(health_recovery_window, "--health-recovery-window")
    flags: dict[str, object] = {
        "config-file": config_file,
        "mig-strategy": mig_strategy,
        "fail-on-init-error": fail_on_init_error,
        "nvidia-driver-root": nvidia_driver_root,
        "nvidia-dev-root": nvidia_dev_root,
        "pass-device-specs": pass_device_specs,
        "device-list-strategy": device_list_strategy,
        "device-id-strategy": device_id_strategy,
        "shared-devices-allocation-policy": shared_devices_allocation_policy,
        "cdi-annotation-prefix": cdi_annotation_prefix,
        "nvidia-cdi-hook-path": nvidia_cdi_hook_path,
        "driver-root-ctr-path": driver_root_ctr_path,
        "device-discovery-strategy": device_discovery_strategy,
        "mps-root": mps_root,
        "gds-enabled": gds_enabled,
        "mofed-enabled": mofed_enabled,
    }
    settings = DevicePluginSettings(
        options=opts,
        flags={k: v for k, v in flags.items() if v is not None},
        kubelet_dir=kubelet_dir,
        recovery_window=window,
        state_file=state_file,
    )
    settings = check(settings)  # a bad flag, variable or config file fails here, with the command line's message
    log_memory(logging.getLogger("kgpu.deviceplugin"), "command line parsed")
    hand_over("device-plugin", settings.to_json())  # serves from a lean interpreter; returns in-process (tests)
    serve(settings)


