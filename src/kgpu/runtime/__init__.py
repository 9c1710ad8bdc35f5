"""Container-runtime configuration for NVIDIA GPUs: containerd (v2/v3, k3s, RKE2), docker, CRI-O.

Plan first, then apply: planners read the current files under ``root`` (links followed as the
node would) and return a :class:`RuntimePlan` (old text, new text, unified diff per file);
:func:`apply_plan` lands every file or none, keeping ``.kgpu.bak`` and ``.kgpu.orig`` (see
:mod:`kgpu.fsio`). Values the runtime itself would refuse are refused before anything is written
(:mod:`kgpu.runtime.checks`). Keys, file names and flags match nvidia-ctk's
(``nvidia-ctk runtime configure``), so a node configured by either tool reads the same.

Example::

    from kgpu.runtime import ConfigureRequest, plan_configure, apply_plan
    plan = plan_configure(ConfigureRequest(runtime="containerd", set_as_default=True), Path("/"))
    print(plan.diff())
    apply_plan(plan)
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from kgpu.errors import ConfigError
from kgpu.runtime import containerd, crio, docker, rancher, toolkit
from kgpu.runtime.plan import (
    BACKUP_SUFFIX,
    NVIDIA_RUNTIME_NAME,
    NVIDIA_RUNTIME_PATH,
    ORIGINAL_SUFFIX,
    RUNTIMES,
    ConfigureRequest,
    FileChange,
    RuntimePlan,
    apply_plan,
    host_path,
)

__all__ = [
    "BACKUP_SUFFIX",
    "NVIDIA_RUNTIME_NAME",
    "NVIDIA_RUNTIME_PATH",
    "ORIGINAL_SUFFIX",
    "RUNTIMES",
    "ConfigureRequest",
    "FileChange",
    "RuntimePlan",
    "apply_plan",
    "host_path",
    "plan_configure",
    "plan_unconfigure",
]


_RUNTIME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _validate(req: ConfigureRequest) -> None:
    if req.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {req.runtime!r}: allowed values are {', '.join(RUNTIMES)}")
    if req.no_drop_in and req.drop_in:
        raise ConfigError("--drop-in-config and --no-drop-in exclude each other: pick one")
    for flag, value in (("--config", req.config), ("--drop-in-config", req.drop_in)):
        if value is not None and not value.startswith("/"):
            raise ConfigError(f"{flag} {value!r}: give an absolute path as the node sees it (it resolves under --root)")
    if req.runtime_path is not None and req.runtime != "docker" and not req.runtime_path.startswith("/"):
        raise ConfigError(f"--nvidia-runtime-path {req.runtime_path!r}: {req.runtime} needs an absolute path")
    if req.config_version not in (None, 2, 3):
        raise ConfigError(f"--config-version {req.config_version}: allowed values are 2 and 3")
    if not _RUNTIME_NAME.fullmatch(req.runtime_name):
        raise ConfigError(f"--nvidia-runtime-name {req.runtime_name!r}: use letters, digits, '.', '_' and '-'")


def plan_configure(req: ConfigureRequest, root: Path = Path("/")) -> RuntimePlan:
    """What configuring ``req.runtime`` for the NVIDIA runtime would change under ``root``."""
    _validate(req)
    if req.runtime == "docker":
        plan = docker.plan_configure(req, root)
    elif req.runtime == "crio":
        plan = crio.plan_configure(req, root)
    else:
        rc = rancher.detect(root) if req.config is None and req.drop_in is None else None
        plan = rancher.plan_configure(req, root, rc) if rc else containerd.plan_configure(req, root)
    extra = toolkit.plan_driver_root(req.driver_root, root)
    notes = list(plan.notes) + toolkit.missing_runtime_notes(req, root)
    return replace(plan, changes=plan.changes + extra, notes=tuple(notes))


def plan_unconfigure(req: ConfigureRequest, root: Path = Path("/")) -> RuntimePlan:
    """What removing the NVIDIA runtime from ``req.runtime``'s config would change under ``root``."""
    _validate(req)
    if req.runtime == "docker":
        return docker.plan_unconfigure(req, root)
    if req.runtime == "crio":
        return crio.plan_unconfigure(req, root)
    rc = rancher.detect(root) if req.config is None and req.drop_in is None else None
    return rancher.plan_unconfigure(req, root, rc) if rc else containerd.plan_unconfigure(req, root)

