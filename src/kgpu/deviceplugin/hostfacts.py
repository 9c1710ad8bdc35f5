"""What the device plugin needs to know about its host, read once when it starts (or reloads).

The only I/O behind allocation: which control device nodes exist, where the driver's libraries and
binaries are (for ``driver-mounts``), which IMEX channels exist, and the driver's MIG capability
minors. Everything after this is a pure decision over :class:`~kgpu.deviceplugin.allocate.HostFacts`.

The one driver root (:class:`kgpu.config.DriverRoot`) says where the driver lives on the host and where
the plugin reads it (``containerDriverRoot``, ``/driver-root``, when that is mounted, as in NVIDIA's
DaemonSet). ``driver-mounts`` without driver files refuses to start (:class:`NoDriverFiles`).

Example::

    facts = read_host_facts(config)          # HostFacts(dev_root="/", control_nodes=(...), ...)
"""

from __future__ import annotations

import re
from pathlib import Path

from kgpu.config import DRIVER_MOUNTS, DriverRoot, PluginConfig, resolve_driver_root
from kgpu.container import Mount
from kgpu.deviceplugin.allocate import (
    CONTAINER_BIN_DIR,
    CONTAINER_LIB_DIR,
    REQUIRED_CONTROL_NODES,
    HostFacts,
)
from kgpu.deviceplugin.devices import CONTROL_DEVICE_NODES, parse_mig_minors
from kgpu.errors import ConfigError
from kgpu.host.driverfiles import discover_driver_files
from kgpu.host.driverroot import CUDA_SONAME, NVML_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_library

MIG_MINORS = "proc/driver/nvidia-caps/mig-minors"


class NoDriverFiles(ConfigError):
    """A list strategy needs the driver's files (driver-mounts), and the driver root has none: the
    containers the plugin would admit could not run CUDA, so it does not advertise devices."""


def driver_root_seen(config: PluginConfig, host_root: Path = Path("/")) -> DriverRoot:
    """The one driver root (:attr:`PluginConfig.driver_root`), or, when the host's tree is read under
    ``host_root`` (tests, a host mounted elsewhere), the same host path under it."""
    if host_root == Path("/"):
        return config.driver_root
    return resolve_driver_root(config.driver_root.host, host_root=host_root)


def driver_file_mounts(root: DriverRoot) -> tuple[Mount, ...]:
    """Read-only mounts of the driver's libraries (and their soname links) and binaries.

    Each library file is mounted under its own name and under every soname link that points at
    it (``libcuda.so.1`` → the ``libcuda.so.580.95.05`` file), so the dynamic loader finds it
    without ``ldconfig`` in the container. Files are found where this process sees the driver
    (``root.view``); the mounts name them as the host does (under ``root.host``).
    """
    files = discover_driver_files(root.view)
    mounts: list[Mount] = []
    for lib in files.libraries:
        mounts.append(Mount(f"{CONTAINER_LIB_DIR}/{lib.name}", root.host_path(lib), read_only=True))
    by_name = {lib.name: lib for lib in files.libraries}
    for link in files.library_links:
        target = by_name.get(link.target)
        if target is not None:
            mounts.append(Mount(f"{CONTAINER_LIB_DIR}/{link.path.name}", root.host_path(target), read_only=True))
    for binary in files.binaries:
        real = binary.resolve()
        host = root.host_path(real if _inside(real, root.view) else binary)
        mounts.append(Mount(f"{CONTAINER_BIN_DIR}/{binary.name}", host, read_only=True))
    return tuple(mounts)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def no_driver_files(root: DriverRoot, host_root: Path = Path("/")) -> NoDriverFiles:
    """The one line saying the driver root has no driver, and where one is (a well-known root) if any."""
    where = f"{root.view}" if str(root.view) == root.host else f"{root.view} (the host's {root.host})"
    found = next((r for r in WELL_KNOWN_DRIVER_ROOTS if str(r) != root.host
                  and find_library(host_root / str(r).lstrip("/"), NVML_SONAME) is not None), None)
    fix = (f"the driver is under {found}: run with --driver-root {found}" if found is not None else
           "give --driver-root the directory the driver is installed in on the host (/, /run/nvidia/driver, "
           "/usr/local/nvidia) and, in a container, mount it at /driver-root")
    return NoDriverFiles(
        f"device list strategy {DRIVER_MOUNTS} needs the NVIDIA driver's libraries, but there is no "
        f"{NVML_SONAME} or {CUDA_SONAME} under {where}; {fix}"
    )


CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
"""Where container runtimes look for CDI specs (containerd's and CRI-O's default cdi_spec_dirs)."""


GENERATE_SPEC = {
    "nvidia.com/gpu": "kgpu cdi generate --output /etc/cdi/nvidia.yaml (or kgpu node prepare --apply, or nvidia-ctk "
                      "cdi generate)",
    "nvidia.com/gds": "nvidia-ctk cdi generate --mode gds --output /etc/cdi/nvidia-gds.yaml, or set gdsEnabled false",
    "nvidia.com/mofed": "nvidia-ctk cdi generate --mode mofed --output /etc/cdi/nvidia-mofed.yaml, or set mofedEnabled "
                        "false",
    "nvidia.com/imex-channel": "nvidia-ctk cdi generate --mode imex --output /etc/cdi/nvidia-imex.yaml, or leave "
                               "imex.channelIDs empty",
}
"""How to write the CDI spec of each kind the cdi-* strategies name (kgpu cdi generate writes the GPUs' only)."""


def check_cdi_specs(host_root: Path = Path("/"), kinds: tuple[str, ...] = ("nvidia.com/gpu",)) -> list[str]:
    """The cdi-* strategies name devices of the node's CDI specs, of ``kinds`` (``nvidia.com/gpu``, and as NVIDIA's
    plugin does, ``nvidia.com/gds``, ``nvidia.com/mofed`` and ``nvidia.com/imex-channel`` when configured): a kind
    no spec has means every container would fail to start, so :class:`NoDriverFiles` is raised naming it and how
    to write its spec. Warnings when the spec directories cannot be seen (the plugin's container does not mount
    them), so nothing can be checked."""
    dirs = [host_root / d.lstrip("/") for d in CDI_SPEC_DIRS]
    if not any(d.is_dir() for d in dirs):
        return [f"cannot see {' or '.join(CDI_SPEC_DIRS)}: not checking that a CDI spec for {', '.join(kinds)} "
                "exists (mount them into the plugin to have it checked)"]
    missing = list(kinds)
    for directory in dirs:
        for spec in sorted(directory.glob("*.y*ml")) + sorted(directory.glob("*.json")):
            try:
                text = spec.read_text(errors="replace")[:1024 * 1024]
            except OSError:
                continue
            missing = [k for k in missing if not re.search(
                rf'["\']?kind["\']?\s*:\s*["\']?{re.escape(k)}["\']?\s*(,|$)', text, re.M)]
    if not missing:
        return []
    kind = missing[0]
    raise NoDriverFiles(
        f"the cdi-annotations/cdi-cri strategies name {kind} devices of the node's CDI specs, but no spec under "
        f"{' or '.join(CDI_SPEC_DIRS)} has kind {kind}; write one with {GENERATE_SPEC[kind]}"
    )


def read_host_facts(config: PluginConfig, host_root: Path = Path("/"), *, check_cdi: bool = True) -> HostFacts:
    """Device nodes, driver files and MIG minors on the host, as the plugin sees them (see
    :func:`driver_root_seen`), with warnings about what is missing.

    Raises :class:`NoDriverFiles` when ``driver-mounts`` finds no driver library under the driver root, or
    a CDI strategy finds no ``nvidia.com/gpu`` CDI spec (``check_cdi``: not for a simulated node, which has
    no driver to write one from).
    """
    warnings: list[str] = []
    flags = config.flags
    root = driver_root_seen(config, host_root)
    driver_root, view = root.host, root.view
    if driver_root == flags.plugin.container_driver_root and driver_root != "/":
        warnings.append(
            f"nvidiaDriverRoot is {driver_root!r}, the plugin container's own mount point; it must be the "
            "driver root's path on the host (e.g. /run/nvidia/driver), which the kubelet resolves device and "
            "driver paths against"
        )
    # Device nodes: nvidiaDevRoot, else the driver root when it holds dev/ (a driver container), else /.
    if flags.nvidia_dev_root:
        dev_root = flags.nvidia_dev_root
        dev_view = view if dev_root == driver_root else host_root / dev_root.lstrip("/")
    elif driver_root != "/" and (view / "dev/nvidiactl").exists():
        dev_root, dev_view = driver_root, view
    else:
        dev_root, dev_view = "/", host_root
    control = tuple(p for p in CONTROL_DEVICE_NODES if (dev_view / p.lstrip("/")).exists())
    if not control:
        control = REQUIRED_CONTROL_NODES
        if flags.plugin.pass_device_specs or flags.plugin.uses(DRIVER_MOUNTS):
            warnings.append(
                f"cannot see {dev_view / 'dev/nvidiactl'}; passing {', '.join(control)} without checking they "
                "exist (load nvidia-uvm on the host, or mount the host's /dev into the plugin to check)"
            )
    mounts: tuple[Mount, ...] = ()
    if flags.plugin.uses(DRIVER_MOUNTS):
        mounts = driver_file_mounts(root)
        if not any(m.container_path.startswith(CONTAINER_LIB_DIR) for m in mounts):
            raise no_driver_files(root, host_root)
    channels = tuple(
        f"/dev/nvidia-caps-imex-channels/channel{c}"
        for c in config.imex.channel_ids
        if (dev_view / f"dev/nvidia-caps-imex-channels/channel{c}").exists() or config.imex.required
    )
    if flags.plugin.any_cdi and check_cdi:
        kinds = ("nvidia.com/gpu", *(["nvidia.com/imex-channel"] if channels else []),
                 *(["nvidia.com/gds"] if flags.gds_enabled else []),
                 *(["nvidia.com/mofed"] if flags.mofed_enabled else []))
        warnings.extend(check_cdi_specs(host_root, kinds))
    minors = read_mig_minors(host_root) if flags.mig_strategy != "none" else {}
    return HostFacts(dev_root=dev_root, control_nodes=control, driver_mounts=mounts, imex_channels=channels,
                     mig_minors=minors, warnings=tuple(warnings))


def read_mig_minors(host_root: Path) -> dict[tuple[int, int, int | None], int]:
    try:
        return parse_mig_minors((host_root / MIG_MINORS).read_text())
    except OSError:
        return {}
