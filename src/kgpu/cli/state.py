"""Options every subcommand shares, parsed once by the app callback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from kgpu.gpu.backend import GPUBackend


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    backend: str = "auto"
    simulate: str | None = None
    simulate_events: Path | None = None
    driver_root: Path | None = None

    def open_backend(self) -> GPUBackend:
        from kgpu.gpu.backend import open_backend

        return open_backend(
            self.backend,
            simulate=self.simulate,
            driver_root=self.driver_root,
            simulate_events=self.simulate_events,
        )


def global_options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()
