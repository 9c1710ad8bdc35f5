"""Options every kgpu command shares (``--backend``, ``--simulate``, ``--driver-root``, ``--log-level``).

A plain value, importable without the command line's libraries, so that a daemon's process module can
open the same backend the command was asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kgpu.config.driverroot import driver_root_from
from kgpu.config.flags import DEVICE_PLUGIN, flag_named, lookup
from kgpu.config.limits import shown
from kgpu.config.values import DriverRoot
from kgpu.errors import ConfigError
from kgpu.gpu.backend import BACKEND_NAMES, open_backend
from kgpu.log import LEVELS

if TYPE_CHECKING:
    from kgpu.gpu.backend import GPUBackend

ENVIRONMENT = {
    "backend": "KGPU_BACKEND",
    "simulate": "KGPU_SIMULATE",
    "simulate_events": "KGPU_SIMULATE_EVENTS",
    "log_level": "KGPU_LOG_LEVEL",
}
"""The environment variable of each global option (``kgpu --simulate`` or ``KGPU_SIMULATE``)."""


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    backend: str = "auto"
    simulate: str | None = None
    simulate_events: Path | None = None
    log_level: str = "info"
    flags: Mapping[str, object] = field(default_factory=dict)
    """NVIDIA's driver-root flags given before the command (``kgpu --driver-root DIR …``), by flag name."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> GlobalOptions:
        """The global options as a daemon's own entry point takes them: from their environment variables.
        ConfigError for a backend or log level that does not exist."""
        backend = environ.get(ENVIRONMENT["backend"]) or "auto"
        if backend not in BACKEND_NAMES:
            raise ConfigError(f"environment variable {ENVIRONMENT['backend']}: {shown(backend)} is not one of "
                              f"{', '.join(BACKEND_NAMES)}")
        level = (environ.get(ENVIRONMENT["log_level"]) or "info").lower()
        if level not in LEVELS:
            raise ConfigError(f"environment variable {ENVIRONMENT['log_level']}: {shown(level)} is not one of "
                              f"{', '.join(LEVELS)}")
        events = environ.get(ENVIRONMENT["simulate_events"])
        return cls(backend=backend, simulate=environ.get(ENVIRONMENT["simulate"]) or None,
                   simulate_events=Path(events) if events else None, log_level=level)

    def driver_root(self, environ: Mapping[str, str] | None = None, host_root: Path = Path("/")) -> DriverRoot:
        """The driver root from these flags and the environment (commands without a config file)."""
        return driver_root_from(self.flags, os.environ if environ is None else environ, host_root)

    def named_driver_root(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The driver root's host path when one was named (``--driver-root``, ``NVIDIA_DRIVER_ROOT``), else None."""
        found = lookup(flag_named("driver-root"), DEVICE_PLUGIN, self.flags, os.environ if environ is None else environ)
        return str(found[0]) if found is not None else None

    def open_backend(self, driver_root: DriverRoot | None = None) -> GPUBackend:
        """The GPU backend; NVML is loaded from ``driver_root`` (default: :meth:`driver_root`)."""

        simulated = self.backend == "simulated" or self.simulate is not None
        root = None if simulated else (driver_root or self.driver_root())
        return open_backend(
            self.backend,
            simulate=self.simulate,
            driver_root=root.view if root is not None and root.explicit else None,
            simulate_events=self.simulate_events,
        )
