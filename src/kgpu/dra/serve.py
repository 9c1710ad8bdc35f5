"""``kgpu dra-plugin`` put together: settings checked up front, then the driver assembled and run.

:func:`check` turns the command line into :class:`DraPluginSettings` or a one-line error; :func:`serve`
opens the GPU backend, refuses to share GPUs with a classic device plugin (:mod:`kgpu.dra.coexist`),
builds the devices, the node's CDI edits, the API clients, the MPS daemons and the prepared-claims
state, and runs :class:`kgpu.dra.daemon.DraDriver` until SIGTERM.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kgpu.cdi import CdiError, CdiOptions, generate_spec
from kgpu.daemon.http import parse_listen
from kgpu.deviceplugin.health import XidPolicy
from kgpu.dra.api import PLUGINS_DIR, REGISTRY_DIR
from kgpu.dra.coexist import conflict, find_classic_plugins
from kgpu.dra.daemon import DraDriver, DriverSettings
from kgpu.dra.devices import ConsumableShares, DraDevice, build_devices
from kgpu.dra.health import MODES, DeviceHealth
from kgpu.dra.kube import ApiClaims, SlicePublisher, kube_client
from kgpu.dra.mps import MpsDaemons
from kgpu.dra.prepare import NodeEdits, PrepareSettings
from kgpu.dra.state import DriverState
from kgpu.errors import ConfigError, KgpuError
from kgpu.gpu.model import Inventory
from kgpu.host.driverroot import CUDA_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_binary, find_library
from kgpu.host.pci import pcie_root
from kgpu.options import GlobalOptions
from kgpu.sharing.daemon import driver_env, find_control_binary
from kgpu.sharing.paths import MpsPaths

log = logging.getLogger("kgpu.dra")

DEFAULT_DRIVER = "gpu.nvidia.com"
DEFAULT_CDI_ROOT = Path("/var/run/cdi")
CHECKPOINT_NAME = "kgpu-checkpoint.json"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class DraPluginSettings:
    options: GlobalOptions = field(default_factory=GlobalOptions)
    driver: str = DEFAULT_DRIVER
    node_name: str = ""
    kubeconfig: Path | None = None
    registry_dir: Path = REGISTRY_DIR
    plugins_dir: Path = PLUGINS_DIR
    cdi_root: Path = DEFAULT_CDI_ROOT
    gpus: tuple[str, ...] | None = None
    """Indices or UUIDs of the GPUs this driver publishes; None: all."""
    consumable_shares: str = "memory"
    unhealthy: str = "remove"
    recovery_window: float = 300.0
    rescan_interval: float = 60.0
    mps_root: Path = Path("/run/kgpu/mps")
    mps_shm_dir: Path | None = None
    mps_control_binary: Path | None = None
    device_plugins_dir: Path = Path("/var/lib/kubelet/device-plugins")
    device_plugin_state_file: Path | None = Path("/run/kgpu/device-plugin/state.json")
    host_root: Path = Path("/")
    nvidia_dev_root: str | None = None
    """Root of the /dev/nvidia* nodes on the host; default the driver root (kgpu's one ``--driver-root``)."""
    nvidia_cdi_hook_path: str = "/usr/bin/nvidia-cdi-hook"
    healthz: str = ""
    """HOST:PORT of the /healthz endpoint; empty: none."""

    @property
    def checkpoint_path(self) -> Path:
        return self.plugins_dir / self.driver / CHECKPOINT_NAME


def check(settings: DraPluginSettings) -> DraPluginSettings:
    """The settings, or ConfigError naming the flag, the value and what is allowed."""
    if not _DNS_SUBDOMAIN.match(settings.driver) or len(settings.driver) > 63:
        raise ConfigError(f"--driver-name={settings.driver!r}: a DRA driver name is a DNS subdomain of at most 63 "
                          "characters, such as gpu.nvidia.com")
    node = settings.node_name or os.environ.get("NODE_NAME", "")
    if not node:
        raise ConfigError("--node-name (NODE_NAME) is required: the Kubernetes node this plugin runs on")
    if not _DNS_SUBDOMAIN.match(node):
        raise ConfigError(f"--node-name={node!r}: not a Kubernetes node name (a DNS subdomain)")
    ConsumableShares.parse(settings.consumable_shares)
    if settings.unhealthy not in MODES:
        raise ConfigError(f"--unhealthy-devices={settings.unhealthy!r}: allowed {', '.join(MODES)}")
    for flag, path in (("--kubelet-registrar-directory-path", settings.registry_dir),
                       ("--kubelet-plugins-directory-path", settings.plugins_dir), ("--cdi-root", settings.cdi_root),
                       ("--mps-root", settings.mps_root)):
        if not path.is_absolute():
            raise ConfigError(f"{flag}={path}: must be an absolute path")
    if settings.healthz:
        parse_listen(settings.healthz, "--healthz")
    if settings.recovery_window < 0 or settings.rescan_interval < 0:
        raise ConfigError("--health-recovery-window and --rescan-interval must not be negative")
    return replace(settings, node_name=node)


def select_gpus(inventory: Inventory, wanted: tuple[str, ...] | None) -> frozenset[str] | None:
    """UUIDs of the GPUs named by index or UUID; ConfigError for a name no GPU has."""
    if wanted is None:
        return None
    out = set()
    for item in wanted:
        gpu = inventory.by_uuid(item) if not item.isdigit() else inventory.by_index(int(item))
        if gpu is None:
            have = ", ".join(f"{g.index} ({g.uuid})" for g in inventory.gpus) or "none"
            raise ConfigError(f"--gpus: no GPU {item!r} on this node (GPUs: {have})")
        out.add(gpu.uuid)
    return frozenset(out)


def _nvidia_smi_timeslice(nvidia_smi: Path, env: dict[str, str]) -> Callable[[str, int], None]:
    """``nvidia-smi compute-policy -i <uuid> --set-timeslice <n>``, as NVIDIA's driver sets an interval."""
    def set_timeslice(uuid: str, value: int) -> None:
        cmd = [str(nvidia_smi), "compute-policy", "-i", uuid, "--set-timeslice", str(value)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={**os.environ, **env},
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KgpuError(f"{' '.join(cmd)}: {exc}") from None
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise KgpuError(f"{' '.join(cmd)} failed: {why[-1] if why else done.returncode}")
    return set_timeslice


def _check_shm(shm_dir: Path) -> None:
    """MPS clients get ``shm_dir`` as /dev/shm: it must be the /dev/shm of the daemons this process starts."""
    try:
        ours, theirs = os.stat("/dev/shm"), os.stat(shm_dir)
    except OSError:
        return  # created with the first daemon; the chart mounts it at /dev/shm
    if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
        log.warning("MPS clients would not share /dev/shm with the MPS daemons this plugin starts: on the host, "
                    "pass --mps-shm-dir /dev/shm; in a container, mount the shm directory at /dev/shm",
                    extra={"event": "mps", "mps_shm_dir": str(shm_dir)})


def serve(settings: DraPluginSettings) -> None:

    options = settings.options
    stop = threading.Event()

    backend = options.open_backend()
    try:
        inventory = backend.inventory()
        selected = select_gpus(inventory, settings.gpus)
        ours = selected if selected is not None else frozenset(g.uuid for g in inventory.gpus)
        plugins = find_classic_plugins(settings.device_plugins_dir, settings.device_plugin_state_file)
        why = conflict(plugins, ours, told=settings.gpus is not None)
        if why is not None:
            raise ConfigError(why)
        shares = ConsumableShares.parse(settings.consumable_shares)

        def build(inv: Inventory) -> tuple[DraDevice, ...]:
            roots = {g.sysfs_bus_id: r for g in inv.gpus if (r := pcie_root(settings.host_root, g.sysfs_bus_id))}
            return build_devices(inv, roots, shares, selected)

        node_edits = NodeEdits()
        set_timeslice: Callable[[str, int], None] | None = None
        driver_root = options.driver_root()
        roots = [driver_root.view] if driver_root.explicit else list(WELL_KNOWN_DRIVER_ROOTS)
        if backend.name != "simulated":
            try:
                # Host paths, read under --host-root: what the container runtime will mount.
                spec = generate_spec(inventory, CdiOptions(
                    root=settings.host_root, driver_root=driver_root.host,
                    dev_root=settings.nvidia_dev_root or driver_root.host, strategies=("uuid",),
                    hook_path=settings.nvidia_cdi_hook_path,
                )).spec
            except CdiError as exc:
                raise ConfigError(f"cannot describe the GPUs to the container runtime (CDI): {exc}") from None
            node_edits = NodeEdits(common=spec.edits, by_uuid={d.name: d.edits for d in spec.devices})
            smi = next((b for r in roots if (b := find_binary(r, "nvidia-smi")) is not None), None)
            if smi is not None:
                found = next((lib for r in roots if (lib := find_library(r, CUDA_SONAME)) is not None), None)
                set_timeslice = _nvidia_smi_timeslice(smi, driver_env(smi, found.parent if found else None))
        else:
            log.info("simulated node: CDI specs carry the environment only (no device nodes or driver files exist)")

        def control_binary() -> Path:
            return find_control_binary(roots, settings.mps_control_binary)

        library = next((lib for r in roots if (lib := find_library(r, CUDA_SONAME)) is not None), None)
        paths = MpsPaths(settings.mps_root)
        _check_shm(settings.mps_shm_dir or paths.shm_dir)
        mps = MpsDaemons(paths, binary=control_binary, library_dir=library.parent if library else None)
        client = kube_client(settings.kubeconfig)
        prepare_settings = PrepareSettings(driver=settings.driver, pool=settings.node_name, mps_paths=paths,
                                           shm_dir=str(settings.mps_shm_dir) if settings.mps_shm_dir else None)
        parents = {m.uuid: m.parent_uuid for m in inventory.mig_devices}
        health = DeviceHealth(XidPolicy.from_environ(os.environ), parents=parents,
                              recovery_window=settings.recovery_window)
        driver: DraDriver | None = None

        def devices() -> dict[str, DraDevice]:
            assert driver is not None
            return driver.devices_by_name()

        state = DriverState(prepare_settings, devices, ApiClaims(client), settings.checkpoint_path,
                            settings.cdi_root, mps, node_edits=node_edits,
                            set_timeslice=set_timeslice)

        def rescan() -> Inventory:
            fresh = options.open_backend()
            try:
                return fresh.inventory()
            finally:
                fresh.close()

        driver = DraDriver(
            DriverSettings(driver=settings.driver, node=settings.node_name, registry_dir=settings.registry_dir,
                           plugins_dir=settings.plugins_dir, unhealthy=settings.unhealthy,
                           rescan_interval=settings.rescan_interval),
            state, health, SlicePublisher(client, settings.node_name, settings.driver), build,
            backend=backend, rescan=rescan,
        )
        driver.run(stop, inventory, healthz=parse_listen(settings.healthz, "--healthz") if settings.healthz else None)
    finally:
        backend.close()
