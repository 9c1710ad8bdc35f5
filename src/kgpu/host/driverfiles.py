"""The NVIDIA driver's user-space files under a driver root: libraries, binaries, firmware.

Used by CDI spec generation and by the device plugin's ``driver-mounts`` strategy, which
mount these files into containers. Discovery follows nvidia-container-toolkit's approach:
find ``libnvidia-ml.so.1`` (or ``libcuda.so.1``), read the driver version from the file it
resolves to (``libnvidia-ml.so.580.95.05``), and take every ``lib*.so.<version>`` beside it —
only the driver's own libraries carry its exact version as their suffix.

Example::

    files = discover_driver_files(Path("/usr/local/nvidia"))
    files.version        # '580.95.05'
    files.libraries      # (Path('/usr/local/nvidia/lib64/libcuda.so.580.95.05'), ...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kgpu.host.driverroot import CUDA_SONAME, NVML_SONAME, find_binary, find_library

DRIVER_BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)

# When the driver's libraries carry no version suffix (some installers copy only the sonames),
# these are the compute and utility libraries a CUDA container needs (libnvidia-container's list).
KNOWN_LIBRARY_STEMS = (
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-nscq.so",
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    "libnvidia-encode.so",
    "libnvidia-opticalflow.so",
    "libnvcuvid.so",
)


@dataclass(frozen=True, slots=True)
class LibraryLink:
    """A soname symlink beside a driver library, e.g. ``libcuda.so.1 -> libcuda.so.580.95.05``."""

    path: Path
    target: str


@dataclass(frozen=True, slots=True)
class DriverFiles:
    root: Path
    version: str | None
    """Driver version read from the library file names, or None if they carry none."""
    library_dir: Path | None
    libraries: tuple[Path, ...]
    """The library files themselves (not symlinks), sorted."""
    library_links: tuple[LibraryLink, ...]
    """Soname symlinks in ``library_dir`` that point at one of ``libraries``."""
    binaries: tuple[Path, ...]
    firmware: tuple[Path, ...]

    @property
    def found(self) -> bool:
        return self.library_dir is not None


def _version_of(library: Path, soname: str) -> str | None:
    real = library.resolve().name
    prefix = soname.rsplit(".so.", 1)[0] + ".so."
    if real.startswith(prefix):
        version = real[len(prefix) :]
        if version and version != "1" and version[0].isdigit():
            return version
    return None


def discover_driver_files(driver_root: Path, version: str | None = None) -> DriverFiles:
    """Find the driver's user-space files under ``driver_root`` (``/`` for a host-installed driver)."""
    anchor = find_library(driver_root, NVML_SONAME) or find_library(driver_root, CUDA_SONAME)
    binaries = tuple(b for b in (find_binary(driver_root, n) for n in DRIVER_BINARIES) if b is not None)
    if anchor is None:
        return DriverFiles(driver_root, version, None, (), (), binaries, ())
    library_dir = anchor.parent
    version = version or _version_of(anchor, anchor.name)
    entries = sorted(library_dir.iterdir()) if library_dir.is_dir() else []
    if version:
        suffix = f".so.{version}"
        libraries = tuple(p for p in entries if p.name.endswith(suffix) and p.is_file() and not p.is_symlink())
    else:
        libraries = tuple(
            p
            for p in entries
            if p.is_file() and not p.is_symlink() and any(p.name.startswith(s) for s in KNOWN_LIBRARY_STEMS)
        )
    names = {p.name for p in libraries}
    links = []
    for p in entries:
        if p.is_symlink():
            target = os.readlink(p)
            if Path(target).name in names and p.name not in names:
                links.append(LibraryLink(p, Path(target).name))
    firmware: tuple[Path, ...] = ()
    if version:
        fw_dir = driver_root / "lib/firmware/nvidia" / version
        if fw_dir.is_dir():
            firmware = tuple(sorted(p for p in fw_dir.iterdir() if p.is_file()))
    return DriverFiles(driver_root, version, library_dir, libraries, tuple(links), binaries, firmware)
