"""containerd: add (or remove) the ``nvidia`` runtime, as nvidia-ctk ≥ 1.18 does.

By default the change goes into a drop-in, ``/etc/containerd/conf.d/99-nvidia.toml``, and the main
config gains ``imports = ["/etc/containerd/conf.d/*.toml"]``. containerd before 2.1 merges an
imported file's plugin tables *by plugin name* — an imported ``[plugins."io.containerd.grpc.v1.cri"]``
replaces the main file's whole CRI section — so the drop-in carries a copy of the effective CRI
plugin section (main file, then earlier drop-ins) plus the nvidia runtime, never just the runtime.

Config version 2 keeps runtimes under ``plugins."io.containerd.grpc.v1.cri".containerd.runtimes``;
version 3 (containerd 2.x) under ``plugins."io.containerd.cri.v1.runtime".containerd.runtimes``.
The nvidia runtime is a copy of the default (non-nvidia) runtime, else ``runc``, else ``crun`` —
so ``SystemdCgroup`` and friends match — with ``options.BinaryName`` pointing at the NVIDIA runtime.
"""

from __future__ import annotations

import glob
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit

from kgpu.errors import ConfigError
from kgpu.host.paths import node_path
from kgpu.runtime import _toml
from kgpu.runtime.checks import check_containerd
from kgpu.runtime.plan import (
    NVIDIA_RUNTIME_NAME,
    NVIDIA_RUNTIME_PATH,
    ConfigureRequest,
    FileChange,
    RuntimePlan,
    host_path,
    original_text,
    read_node,
    restore_original,
)

DEFAULT_CONFIG = "/etc/containerd/config.toml"
DEFAULT_DROP_IN = "/etc/containerd/conf.d/99-nvidia.toml"
CRI_PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
RUNC_SHIM = "io.containerd.runc.v2"
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
RESTART = "systemctl restart containerd"

DROP_IN_HEADER = """\
# Written by `kgpu runtime configure --runtime containerd`: the nvidia runtime.
# containerd < 2.1 lets an imported plugin table replace the main config's table
# of the same plugin, so this file carries a copy of the whole CRI plugin section
# of {main} (and of earlier drop-ins) plus the nvidia runtime.
# After editing that section there, run `kgpu runtime configure` again.
"""


def config_version(doc: Any, node_path: str, default: int) -> int:
    """The config's ``version``; a file without one is version 1 unless it configures no plugins yet."""
    version = doc.get("version")
    if version is None:
        if _toml.get_path(doc, ["plugins"]) is None:
            return default
        raise ConfigError(
            f"{node_path}: containerd config version 1 (no 'version' key) is not supported; "
            f"convert it with `containerd config migrate > new.toml` (containerd 2.x) or add version = 2"
        )
    if not isinstance(version, int) or version not in CRI_PLUGIN:
        raise ConfigError(f"{node_path}: version = {version!r}; allowed: 2 (containerd 1.x) or 3 (containerd 2.x)")
    return int(version)


def cri_plugin_path(version: int) -> list[str]:
    return ["plugins", CRI_PLUGIN[version]]


def _source_runtime(runtimes: Any, default_name: Any, name: str) -> Any:
    """The runtime whose settings the nvidia runtime copies: the default one, then runc, then crun
    (nvidia-ctk's order; a default that is itself an nvidia runtime does not count)."""
    names = []
    if isinstance(default_name, str) and default_name and not default_name.startswith("nvidia") \
            and default_name != name:
        names.append(default_name)
    names += ["runc", "crun"]
    for candidate in names:
        if runtimes is not None and candidate in runtimes and _toml.is_table(runtimes[candidate]):
            return runtimes[candidate]
    return None


def add_nvidia_runtime(
    doc: Any, version: int, runtime_path: str, set_as_default: bool, cdi: bool, name: str = NVIDIA_RUNTIME_NAME
) -> None:
    """Add or refresh the runtime ``name`` in ``doc`` (a whole config or a drop-in), as nvidia-ctk does.

    A new runtime is a copy of the default (non-nvidia) runtime's table, else runc's, else crun's,
    without their comment lines; ``runtime_type`` empty or missing becomes ``io.containerd.runc.v2``.
    Without ``set_as_default`` a ``default_runtime_name`` naming this runtime is removed.
    """
    cri = _toml.ensure_table(doc, cri_plugin_path(version), header=cdi)
    containerd = _toml.ensure_table(cri, ["containerd"], header=False)
    runtimes = _toml.ensure_table(containerd, ["runtimes"], header=False)
    template = _source_runtime(runtimes, containerd.get("default_runtime_name"), name)

    if name not in runtimes:
        if template is not None:
            # comments after the template's last key describe what follows it: they move below the copy
            following = _toml.take_trailing_comments(template)
            runtimes[name] = _toml.copy_table(template)
            _toml.put_trailing_comments(runtimes[name], following)
        else:
            table = tomlkit.table()
            table["runtime_type"] = RUNC_SHIM
            runtimes[name] = table
    nvidia = runtimes[name]
    if not nvidia.get("runtime_type"):
        _toml.set_key(nvidia, "runtime_type", RUNC_SHIM)
    options = _toml.ensure_table(nvidia, ["options"])
    _toml.set_key(options, "BinaryName", runtime_path)
    systemd = _toml.get_path(template, ["options", "SystemdCgroup"]) if template is not None else None
    if systemd is not None and options.get("SystemdCgroup") != systemd:
        # A cgroup driver that disagrees with runc's (and the kubelet's) makes GPU pods crash now and then.
        _toml.set_key(options, "SystemdCgroup", bool(systemd))
    if set_as_default:
        _toml.set_key(containerd, "default_runtime_name", name)
    elif containerd.get("default_runtime_name") == name:
        del containerd["default_runtime_name"]
    if cdi:
        _toml.set_key(cri, "enable_cdi", True)
        if "cdi_spec_dirs" not in cri:
            dirs = tomlkit.array()
            dirs.extend(CDI_SPEC_DIRS)
            _toml.set_key(cri, "cdi_spec_dirs", dirs)


def remove_nvidia_runtime(doc: Any, version: int, name: str = NVIDIA_RUNTIME_NAME) -> None:
    """Remove the runtime ``name`` and a ``default_runtime_name`` naming it (as nvidia-ctk does), pruning
    the tables that leaves empty."""
    cri = _toml.get_path(doc, cri_plugin_path(version))
    if cri is None:
        return
    containerd = _toml.get_path(cri, ["containerd"])
    runtimes = _toml.get_path(cri, ["containerd", "runtimes"])
    if runtimes is not None and name in runtimes:
        following = _toml.take_trailing_comments(runtimes[name])
        keys = list(runtimes.keys())
        before = keys[keys.index(name) - 1] if keys.index(name) > 0 else None
        del runtimes[name]
        if before is not None and _toml.is_table(runtimes[before]):
            _toml.put_trailing_comments(runtimes[before], following)  # back where configure took them from
    if containerd is not None and containerd.get("default_runtime_name") == name:
        del containerd["default_runtime_name"]
    _prune(doc, [*cri_plugin_path(version), "containerd", "runtimes"])


def _prune(doc: Any, path: list[str]) -> None:
    """Delete the table at ``path`` and its parents while they are empty."""
    while path:
        node = _toml.get_path(doc, path)
        parent = _toml.get_path(doc, path[:-1]) if len(path) > 1 else doc
        if node is None or not _toml.is_table(node) or len(node) > 0:
            break
        del parent[path[-1]]
        path = path[:-1]


def import_pattern(drop_in: str) -> str:
    return f"{PurePosixPath(drop_in).parent}/*.toml"


def _imported(root: Path, doc: Any, drop_in: str) -> list[tuple[str, str | None]]:
    """(node path, text) of the files the main config imports, in containerd's order, except our drop-in."""
    out = []
    for pattern in _toml.string_list(doc.get("imports")):
        for match in sorted(glob.glob(str(host_path(root, pattern)))):
            node = node_path(root, Path(match))
            if PurePosixPath(node) == PurePosixPath(drop_in):
                continue
            where, text = read_node(root, node)  # an import that is a link resolves under the root too
            if where.real.is_file():
                out.append((node, text))
    return out


def _effective_cri(root: Path, main: Any, version: int, drop_in: str) -> Any:
    """The CRI section containerd < 2.1 would end up with: the main file's, replaced by each import's."""
    cri = _toml.get_path(main, cri_plugin_path(version))
    for node, text in _imported(root, main, drop_in):
        other = _toml.parse(text, node)
        check_containerd(_toml.plain(other), node)
        section = _toml.get_path(other, cri_plugin_path(version))
        if section is not None:
            cri = section
    return cri


def _load_main(req: ConfigureRequest, root: Path) -> tuple[str, FileChange, Any]:
    config = req.config or DEFAULT_CONFIG
    where, old = read_node(root, config)
    doc = _toml.parse(old, config)
    check_containerd(_toml.plain(doc), config)
    return config, FileChange.of(where, old, old), doc


def plan_configure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    name = req.runtime_name
    runtime_path = req.runtime_path or NVIDIA_RUNTIME_PATH
    config, main_file, main = _load_main(req, root)
    version = config_version(main, config, req.config_version or 2)
    notes = _cri_disabled_note(main, config)

    if req.no_drop_in:
        if "version" not in main:
            main["version"] = version
        add_nvidia_runtime(main, version, runtime_path, req.set_as_default, req.cdi, name)
        return RuntimePlan("containerd", (replace(main_file, new_text=_toml.dumps(main)),), RESTART, notes)

    drop_in = req.drop_in or DEFAULT_DROP_IN
    drop_at, drop_old = read_node(root, drop_in)
    _toml.parse(drop_old, drop_in)  # refuse to overwrite a drop-in an admin broke by hand without saying so

    source = _effective_cri(root, main, version, drop_in)
    out = tomlkit.document()
    for line in DROP_IN_HEADER.format(main=config).splitlines():
        out.add(tomlkit.comment(line[2:] if line.startswith("# ") else line.lstrip("#")))
    out["version"] = version
    if source is not None:
        out["plugins"] = tomlkit.table(is_super_table=True)
        out["plugins"][CRI_PLUGIN[version]] = _toml.copy_table(source)
    add_nvidia_runtime(out, version, runtime_path, req.set_as_default, req.cdi, name)
    drop_new = _toml.dumps(out).rstrip("\n") + "\n"

    imports = _toml.string_list(main.get("imports"))
    pattern = import_pattern(drop_in)
    if pattern not in imports:
        if "version" not in main:
            main["version"] = version
        array = tomlkit.array()
        array.extend([*imports, pattern])
        main["imports"] = array
    main_change = replace(main_file, new_text=_toml.dumps(main))
    drop_change = FileChange.of(drop_at, drop_old, drop_new)
    return RuntimePlan("containerd", (drop_change, main_change), RESTART, notes)


# Keys configure may add that unconfigure puts back as the original had them.
_RESTORED_KEYS = (("version",), ("enable_cdi",), ("cdi_spec_dirs",), ("containerd", "default_runtime_name"))


def _restore_keys(doc: Any, original: Any, version: int, name: str) -> None:
    cri_path = cri_plugin_path(version)
    for key in _RESTORED_KEYS:
        path = list(key) if key == ("version",) else [*cri_path, *key]
        want = _toml.get_path(original, path)
        if key[-1] == "default_runtime_name" and want == name:
            continue  # never back to a default runtime that is gone
        parent = _toml.get_path(doc, path[:-1]) if len(path) > 1 else doc
        if want is None:
            if parent is not None and _toml.is_table(parent) and path[-1] in parent:
                del parent[path[-1]]
                _prune(doc, path[:-1])
        elif parent is not None and _toml.plain(parent.get(path[-1])) != _toml.plain(want):
            _toml.set_key(parent, path[-1], _toml.plain(want))


def _unconfigured_main(main_file: FileChange, main: Any, version: int, name: str) -> FileChange:
    """The main file after unconfigure: the original's keys back, then the original itself if it means the same.

    Without an original (kgpu never changed this file) ``version`` alone left is dropped and a file
    left empty is removed, as nvidia-ctk does.
    """
    original = original_text(main_file)
    if original is not None:
        _restore_keys(main, _toml.parse(original, main_file.node_path), version, name)
        return restore_original(replace(main_file, new_text=_toml.dumps(main)), _toml.same)
    if list(main.keys()) == ["version"]:
        del main["version"]
    text = _toml.dumps(main)
    return replace(main_file, new_text=text if text.strip() else None)


def plan_unconfigure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    name = req.runtime_name
    config, main_file, main = _load_main(req, root)
    if main_file.old_text is None:
        main_change = main_file
    else:
        version = config_version(main, config, 2)
        remove_nvidia_runtime(main, version, name)
        main_change = _unconfigured_main(main_file, main, version, name)
    if req.no_drop_in:
        return RuntimePlan("containerd", (main_change,), RESTART)

    drop_in = req.drop_in or DEFAULT_DROP_IN
    drop_at, drop_old = read_node(root, drop_in)
    drop_change = FileChange.of(drop_at, drop_old, None)
    pattern = import_pattern(drop_in)
    imports = _toml.string_list(main.get("imports"))
    others = [n for n, _ in _imported(root, main, drop_in) if PurePosixPath(n).match(pattern)]
    if main_file.old_text is not None and pattern in imports and not others:
        remaining = [i for i in imports if i != pattern]
        if remaining:
            array = tomlkit.array()
            array.extend(remaining)
            main["imports"] = array
        else:
            del main["imports"]
        main_change = _unconfigured_main(main_file, main, config_version(main, config, 2), name)
    return RuntimePlan("containerd", (drop_change, main_change), RESTART)


def _cri_disabled_note(doc: Any, node_path: str) -> tuple[str, ...]:
    disabled = _toml.string_list(doc.get("disabled_plugins"))
    hits = [p for p in disabled if p in ("cri", *CRI_PLUGIN.values())]
    if not hits:
        return ()
    return (
        f"{node_path} disables the CRI plugin (disabled_plugins = {hits}), as Docker's containerd.io "
        f"package ships it: the kubelet cannot use this containerd until you remove it from that list",
    )
