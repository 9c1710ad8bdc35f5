"""The one driver root, resolved once at the edge: the host path and where this process reads it.

NVIDIA's DaemonSets name the driver twice: ``nvidiaDriverRoot`` (``--driver-root``,
``NVIDIA_DRIVER_ROOT``) is where it is installed *on the host*, and ``containerDriverRoot``
(``--driver-root-ctr-path``, ``DRIVER_ROOT_CTR_PATH``, ``CONTAINER_DRIVER_ROOT``, default
``/driver-root``) is where the plugin's container has the host's driver root mounted. kgpu keeps
exactly that meaning for every command: ``kgpu --driver-root /usr/local/nvidia gpus`` and
``kgpu --driver-root /usr/local/nvidia device-plugin`` name the same host directory, read at
``/driver-root`` when that is mounted and at the host path itself otherwise.

Example::

    root = resolve_driver_root("/usr/local/nvidia", "/driver-root")
    root.view          # Path('/usr/local/nvidia') on a host without /driver-root
    root.host_path(root.view / "lib64/libcuda.so.1")   # '/usr/local/nvidia/lib64/libcuda.so.1'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kgpu.config.flags import DEVICE_PLUGIN, flag_named, lookup
from kgpu.config.values import DEFAULT_CONTAINER_DRIVER_ROOT, DriverRoot
from kgpu.errors import ConfigError
from kgpu.host.driverroot import CUDA_SONAME, NVML_SONAME, find_library


def _holds_driver(root: Path) -> bool:
    return find_library(root, NVML_SONAME) is not None or find_library(root, CUDA_SONAME) is not None


def resolve_driver_root(
    host: str = "/",
    container: str = DEFAULT_CONTAINER_DRIVER_ROOT,
    *,
    host_given: bool = False,
    container_given: bool = False,
    host_root: Path = Path("/"),
) -> DriverRoot:
    """Where the driver is on the host (``host``) and where this process reads it.

    ``host_root`` is where the host's filesystem is (``--root`` of commands that read a host tree
    mounted elsewhere); then the driver is read under it. Otherwise ``container`` is used when it is
    a directory (the DaemonSet mounted the host's driver root there) that was named, or, for NVIDIA's
    default ``/driver-root``, that holds the driver (as NVIDIA's plugin looks for the library there and
    falls back otherwise: an empty ``/driver-root`` on a host is not the driver); a container path other than
    NVIDIA's default that was named explicitly but does not exist is an error, so a missing mount is
    not mistaken for a driver on the plugin's own filesystem. (NVIDIA's own example config names the
    default ``/driver-root``; that one is used only when it exists.)
    """
    host = host or "/"
    if not host.startswith("/"):
        raise ConfigError(f"driver root {host[:100]!r} must be an absolute path on the host, such as / or "
                          "/run/nvidia/driver")
    if host_root != Path("/"):
        return DriverRoot(host=host, view=host_root / host.lstrip("/"), explicit=True)
    if container_given and container == "/":
        return DriverRoot(host=host, view=Path("/"), explicit=True)  # the driver root is this container's /
    mounted = Path(container) if container and container != "/" else None
    if mounted is not None and mounted.is_dir() and (container_given or _holds_driver(mounted)):
        return DriverRoot(host=host, view=mounted, explicit=True)
    if container_given and container not in ("", "/", DEFAULT_CONTAINER_DRIVER_ROOT):
        raise ConfigError(
            f"driver-root-ctr-path {container[:100]!r} does not exist in this container; mount the host's driver "
            f"root ({host}) there, or leave it unset when kgpu runs on the host"
        )
    return DriverRoot(host=host, view=Path(host), explicit=host_given)


def driver_root_from(given: Mapping[str, object], environ: Mapping[str, str],
                     host_root: Path = Path("/")) -> DriverRoot:
    """The driver root from the command line (``--driver-root``, ``--driver-root-ctr-path``) and the
    environment (``NVIDIA_DRIVER_ROOT``; ``DRIVER_ROOT_CTR_PATH`` before ``CONTAINER_DRIVER_ROOT``), for
    commands that read no config file."""
    host = lookup(flag_named("driver-root"), DEVICE_PLUGIN, given, environ)
    container = lookup(flag_named("driver-root-ctr-path"), DEVICE_PLUGIN, given, environ)
    return resolve_driver_root(
        str(host[0]) if host else "/",
        str(container[0]) if container else DEFAULT_CONTAINER_DRIVER_ROOT,
        host_given=host is not None,
        container_given=container is not None,
        host_root=host_root,
    )
