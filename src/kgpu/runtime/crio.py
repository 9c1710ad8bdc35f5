"""CRI-O: a drop-in ``/etc/crio/crio.conf.d/99-nvidia.toml`` with ``[crio.runtime.runtimes.nvidia]``.

CRI-O decodes its drop-ins one after another onto the same configuration, so a drop-in that only
names the nvidia runtime adds it without touching the others. As nvidia-ctk does, the runtime
starts as a copy of the default runtime (else ``runc``, else ``crun``) from the main config and the
earlier drop-ins, with ``runtime_path`` and ``runtime_type = "oci"`` set. CRI-O has CDI on already.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit

from kgpu.runtime import _toml
from kgpu.runtime.plan import (
    NVIDIA_RUNTIME_NAME,
    NVIDIA_RUNTIME_PATH,
    ConfigureRequest,
    FileChange,
    RuntimePlan,
    host_path,
    read_text,
)

DEFAULT_CONFIG = "/etc/crio/crio.conf"
DEFAULT_DROP_IN = "/etc/crio/crio.conf.d/99-nvidia.toml"
RESTART = "systemctl restart crio"
HEADER = "Written by `kgpu runtime configure --runtime crio`: the nvidia runtime for CRI-O."


def _sources(req: ConfigureRequest, root: Path, drop_in: str) -> list[Any]:
    """The main config and the other drop-ins, in the order CRI-O reads them."""
    config = req.config or DEFAULT_CONFIG
    docs = [_toml.parse(read_text(host_path(root, config)), config)]
    directory = host_path(root, str(PurePosixPath(drop_in).parent))
    if directory.is_dir():
        for p in sorted(directory.iterdir()):
            node = f"{PurePosixPath(drop_in).parent}/{p.name}"
            if p.is_file() and p.name != PurePosixPath(drop_in).name and not p.name.endswith(".kgpu.bak"):
                docs.append(_toml.parse(read_text(p), node))
    return docs


def _template(docs: list[Any]) -> Any:
    default = None
    runtimes: dict[str, Any] = {}
    for doc in docs:
        default = _toml.get_path(doc, ["crio", "runtime", "default_runtime"]) or default
        for name, table in (_toml.get_path(doc, ["crio", "runtime", "runtimes"]) or {}).items():
            if name != NVIDIA_RUNTIME_NAME and _toml.is_table(table):
                runtimes[name] = table
    names = ([default] if default and not str(default).startswith("nvidia") else []) + ["runc", "crun"]
    return next((runtimes[n] for n in names if n in runtimes), None)


def _add(doc: Any, template: Any, runtime_path: str, set_as_default: bool) -> None:
    crio_runtime = _toml.ensure_table(doc, ["crio", "runtime"], header=set_as_default)
    if set_as_default:
        _toml.set_key(crio_runtime, "default_runtime", NVIDIA_RUNTIME_NAME)
    runtimes = _toml.ensure_table(crio_runtime, ["runtimes"], header=False)
    if NVIDIA_RUNTIME_NAME not in runtimes:
        runtimes[NVIDIA_RUNTIME_NAME] = _toml.copy_table(template) if template is not None else tomlkit.table()
    nvidia = runtimes[NVIDIA_RUNTIME_NAME]
    _toml.set_key(nvidia, "runtime_path", runtime_path)
    _toml.set_key(nvidia, "runtime_type", "oci")


def plan_configure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    runtime_path = req.runtime_path or NVIDIA_RUNTIME_PATH
    notes = ("CRI-O enables CDI by itself (cdi_spec_dirs); --cdi changes nothing here",) if req.cdi else ()
    drop_in = req.drop_in or DEFAULT_DROP_IN
    if req.no_drop_in:
        config = req.config or DEFAULT_CONFIG
        path = host_path(root, config)
        old = read_text(path)
        doc = _toml.parse(old, config)
        _add(doc, _template([doc]), runtime_path, req.set_as_default)
        return RuntimePlan("crio", (FileChange(config, path, old, _toml.dumps(doc)),), RESTART, notes)
    path = host_path(root, drop_in)
    old = read_text(path)
    _toml.parse(old, drop_in)
    doc = tomlkit.document()
    doc.add(tomlkit.comment(HEADER))
    _add(doc, _template(_sources(req, root, drop_in)), runtime_path, req.set_as_default)
    return RuntimePlan("crio", (FileChange(drop_in, path, old, _toml.dumps(doc)),), RESTART, notes)


def plan_unconfigure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    if not req.no_drop_in:
        drop_in = req.drop_in or DEFAULT_DROP_IN
        path = host_path(root, drop_in)
        return RuntimePlan("crio", (FileChange(drop_in, path, read_text(path), None),), RESTART)
    config = req.config or DEFAULT_CONFIG
    path = host_path(root, config)
    old = read_text(path)
    doc = _toml.parse(old, config)
    crio_runtime = _toml.get_path(doc, ["crio", "runtime"])
    runtimes = _toml.get_path(doc, ["crio", "runtime", "runtimes"])
    if runtimes is not None and NVIDIA_RUNTIME_NAME in runtimes:
        del runtimes[NVIDIA_RUNTIME_NAME]
    if crio_runtime is not None and crio_runtime.get("default_runtime") == NVIDIA_RUNTIME_NAME:
        del crio_runtime["default_runtime"]
    new = _toml.dumps(doc) if old is not None else None
    return RuntimePlan("crio", (FileChange(config, path, old, new),), RESTART)
