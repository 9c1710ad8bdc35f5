"""Where MPS lives on the host: one directory per shared GPU under the MPS root.

::

    /run/kgpu/mps/                 the MPS root (--mps-root, env MPS_ROOT, config flags.mpsRoot)
      .ready                       written once every daemon answered after (re)start
      layout.json                  the slices this node offers, with their limits (for exporter/labels)
      shm/                         shared /dev/shm for daemons and clients (tmpfs on the host's /run)
      GPU-<uuid>/
        pipe/                      CUDA_MPS_PIPE_DIRECTORY of that GPU's control daemon
        log/                       CUDA_MPS_LOG_DIRECTORY (control.log, server.log)
        status.json                the daemon's health, refreshed every check (read by the device plugin)

Containers see the pipe and log directories at the same paths, so the environment
``Allocate`` returns is valid both inside a pod and on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgpu.config.values import DEFAULT_MPS_ROOT as _DEFAULT_MPS_ROOT

DEFAULT_MPS_ROOT = Path(_DEFAULT_MPS_ROOT)
CONTAINER_SHM = "/dev/shm"


@dataclass(frozen=True, slots=True)
class MpsPaths:
    root: Path = DEFAULT_MPS_ROOT

    def gpu_dir(self, uuid: str) -> Path:
        return self.root / uuid

    def pipe_dir(self, uuid: str) -> Path:
        return self.root / uuid / "pipe"

    def log_dir(self, uuid: str) -> Path:
        return self.root / uuid / "log"

    def status_file(self, uuid: str) -> Path:
        return self.root / uuid / "status.json"

    def pid_file(self, uuid: str) -> Path:
        """Written by ``nvidia-cuda-mps-control -d`` itself into its pipe directory."""
        return self.pipe_dir(uuid) / "nvidia-cuda-mps-control.pid"

    @property
    def shm_dir(self) -> Path:
        return self.root / "shm"

    @property
    def layout_file(self) -> Path:
        return self.root / "layout.json"

    @property
    def ready_file(self) -> Path:
        return self.root / ".ready"
