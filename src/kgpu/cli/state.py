"""Options every subcommand shares, parsed once by the app callback."""

from __future__ import annotations

import typer

from kgpu.options import GlobalOptions

__all__ = ["GlobalOptions", "global_options"]


def global_options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()
