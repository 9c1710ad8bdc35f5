"""CRI-O: a drop-in ``/etc/crio/crio.conf.d/99-nvidia.toml`` with ``[crio.runtime.runtimes.nvidia]``.

CRI-O decodes its drop-ins one after another onto the same configuration, so a drop-in that only
names the nvidia runtime adds it without touching the others. As nvidia-ctk does, the runtime
starts as a copy of the default runtime (else ``runc``, else ``crun``) from the main config and the
earlier drop-ins, with ``runtime_path`` and ``runtime_type = "oci"`` set. CRI-O has CDI on already.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit

from kgpu.fsio import BACKUP_DIR, locate
from kgpu.runtime import _toml
from kgpu.runtime.checks import check_crio
from kgpu.runtime.plan import (
    NVIDIA_RUNTIME_PATH,
    ConfigureRequest,
    FileChange,
    RuntimePlan,
    original_text,
    read_node,
    restore_original,
)

DEFAULT_CONFIG = "/etc/crio/crio.conf"
DEFAULT_DROP_IN = "/etc/crio/crio.conf.d/99-nvidia.toml"
RESTART = "systemctl restart crio"
HEADER = "Written by `kgpu runtime configure --runtime crio`: the nvidia runtime for CRI-O."


def _parse(text: str | None, node: str) -> Any:
    doc = _toml.parse(text, node)
    check_crio(_toml.plain(doc), node)
    return doc


def _sources(req: ConfigureRequest, root: Path, drop_in: str) -> list[Any]:
    """The main config and the other drop-ins, in the order CRI-O reads them."""
    config = req.config or DEFAULT_CONFIG
    docs = [_parse(read_node(root, config)[1], config)]
    dir_node = str(PurePosixPath(drop_in).parent)
    directory = locate(root, dir_node).real
    if directory.is_dir():
        for p in sorted(directory.iterdir()):
            node = f"{dir_node}/{p.name}"
            if p.name != PurePosixPath(drop_in).name:
                where, text = read_node(root, node)
                if where.real.is_file():
                    docs.append(_parse(text, node))
    return docs


def _template(docs: list[Any], name: str) -> Any:
    default = None
    runtimes: dict[str, Any] = {}
    for doc in docs:
        default = _toml.get_path(doc, ["crio", "runtime", "default_runtime"]) or default
        for key, table in (_toml.get_path(doc, ["crio", "runtime", "runtimes"]) or {}).items():
            if key != name and _toml.is_table(table):
                runtimes[key] = table
    names = ([default] if default and not str(default).startswith("nvidia") else []) + ["runc", "crun"]
    return next((runtimes[n] for n in names if n in runtimes), None)


def _add(doc: Any, template: Any, runtime_path: str, set_as_default: bool, name: str) -> None:
    crio_runtime = _toml.ensure_table(doc, ["crio", "runtime"], header=set_as_default)
    if set_as_default:
        _toml.set_key(crio_runtime, "default_runtime", name)
    elif crio_runtime.get("default_runtime") == name:
        del crio_runtime["default_runtime"]
    runtimes = _toml.ensure_table(crio_runtime, ["runtimes"], header=False)
    if name not in runtimes:
        if template is not None:
            following = _toml.take_trailing_comments(template)
            runtimes[name] = _toml.copy_table(template)
            _toml.put_trailing_comments(runtimes[name], following)
        else:
            runtimes[name] = tomlkit.table()
    nvidia = runtimes[name]
    _toml.set_key(nvidia, "runtime_path", runtime_path)
    _toml.set_key(nvidia, "runtime_type", "oci")


def _drop_in_change(root: Path, drop_in: str, old: str | None, new: str | None) -> FileChange:
    # CRI-O reads every file in its drop-in directory: backups there would be read as configuration
    backup_dir = locate(root, BACKUP_DIR + str(PurePosixPath(drop_in).parent)).real
    return FileChange.of(locate(root, drop_in), old, new, backup_dir=backup_dir)


def plan_configure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    name = req.runtime_name
    runtime_path = req.runtime_path or NVIDIA_RUNTIME_PATH
    notes = ("CRI-O enables CDI by itself (cdi_spec_dirs); --cdi changes nothing here",) if req.cdi else ()
    drop_in = req.drop_in or DEFAULT_DROP_IN
    if req.no_drop_in:
        config = req.config or DEFAULT_CONFIG
        where, old = read_node(root, config)
        doc = _parse(old, config)
        _add(doc, _template([doc], name), runtime_path, req.set_as_default, name)
        return RuntimePlan("crio", (FileChange.of(where, old, _toml.dumps(doc)),), RESTART, notes)
    where, old = read_node(root, drop_in)
    _toml.parse(old, drop_in)
    doc = tomlkit.document()
    doc.add(tomlkit.comment(HEADER))
    _add(doc, _template(_sources(req, root, drop_in), name), runtime_path, req.set_as_default, name)
    return RuntimePlan("crio", (_drop_in_change(root, drop_in, old, _toml.dumps(doc)),), RESTART, notes)


def plan_unconfigure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    name = req.runtime_name
    if not req.no_drop_in:
        drop_in = req.drop_in or DEFAULT_DROP_IN
        old = read_node(root, drop_in)[1]
        return RuntimePlan("crio", (_drop_in_change(root, drop_in, old, None),), RESTART)
    config = req.config or DEFAULT_CONFIG
    where, old = read_node(root, config)
    doc = _parse(old, config)
    crio_runtime = _toml.get_path(doc, ["crio", "runtime"])
    runtimes = _toml.get_path(doc, ["crio", "runtime", "runtimes"])
    if runtimes is not None and name in runtimes:
        del runtimes[name]
    if crio_runtime is not None and crio_runtime.get("default_runtime") == name:
        del crio_runtime["default_runtime"]
    file = FileChange.of(where, old, _toml.dumps(doc) if old is not None else None)
    original = original_text(file)
    if original is not None and crio_runtime is not None:
        want = _toml.get_path(_toml.parse(original, config), ["crio", "runtime", "default_runtime"])
        if want is not None and want != name and crio_runtime.get("default_runtime") != want:
            _toml.set_key(crio_runtime, "default_runtime", _toml.plain(want))
            file = replace(file, new_text=_toml.dumps(doc))
    return RuntimePlan("crio", (restore_original(file, _toml.same),), RESTART)
