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
from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit

from kgpu.errors import ConfigError
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


def _source_runtime(runtimes: Any, default_name: str | None) -> Any:
    """The runtime whose settings the nvidia runtime copies: the default one, then runc, then crun."""
    names = []
    if default_name and not default_name.startswith("nvidia"):
        names.append(default_name)
    names += ["runc", "crun"]
    for name in names:
        if runtimes is not None and name in runtimes and _toml.is_table(runtimes[name]):
            return runtimes[name]
    return None


def add_nvidia_runtime(
    doc: Any, version: int, runtime_path: str, set_as_default: bool, cdi: bool, source_cri: Any = None
) -> None:
    """Add or refresh the nvidia runtime in ``doc`` (a whole config or a drop-in).

    ``source_cri`` is the CRI section to copy runtime settings from (default: ``doc``'s own).
    """
    cri = _toml.ensure_table(doc, cri_plugin_path(version), header=cdi)
    source = cri if source_cri is None else source_cri
    containerd = _toml.ensure_table(cri, ["containerd"], header=False)
    runtimes = _toml.ensure_table(containerd, ["runtimes"], header=False)
    default_name = _toml.get_path(source, ["containerd", "default_runtime_name"])
    template = _source_runtime(_toml.get_path(source, ["containerd", "runtimes"]), default_name)

    if NVIDIA_RUNTIME_NAME not in runtimes:
        if template is not None:
            runtimes[NVIDIA_RUNTIME_NAME] = _toml.copy_table(template)
        else:
            table = tomlkit.table()
            table["runtime_type"] = RUNC_SHIM
            runtimes[NVIDIA_RUNTIME_NAME] = table
    nvidia = runtimes[NVIDIA_RUNTIME_NAME]
    if "runtime_type" not in nvidia:
        _toml.set_key(nvidia, "runtime_type", RUNC_SHIM)
    options = _toml.ensure_table(nvidia, ["options"])
    _toml.set_key(options, "BinaryName", runtime_path)
    systemd = _toml.get_path(template, ["options", "SystemdCgroup"]) if template is not None else None
    if systemd is not None and options.get("SystemdCgroup") != systemd:
        # A cgroup driver that disagrees with runc's (and the kubelet's) makes GPU pods crash now and then.
        _toml.set_key(options, "SystemdCgroup", bool(systemd))
    if set_as_default:
        _toml.set_key(containerd, "default_runtime_name", NVIDIA_RUNTIME_NAME)
    if cdi:
        _toml.set_key(cri, "enable_cdi", True)
        if "cdi_spec_dirs" not in cri:
            dirs = tomlkit.array()
            dirs.extend(CDI_SPEC_DIRS)
            _toml.set_key(cri, "cdi_spec_dirs", dirs)


def remove_nvidia_runtime(doc: Any, version: int) -> None:
    """Remove the nvidia runtime (``default_runtime_name`` back to runc if it named it), pruning emptied tables."""
    cri = _toml.get_path(doc, cri_plugin_path(version))
    if cri is None:
        return
    containerd = _toml.get_path(cri, ["containerd"])
    runtimes = _toml.get_path(cri, ["containerd", "runtimes"])
    if runtimes is not None and NVIDIA_RUNTIME_NAME in runtimes:
        del runtimes[NVIDIA_RUNTIME_NAME]
    if containerd is not None and containerd.get("default_runtime_name") == NVIDIA_RUNTIME_NAME:
        # runc is containerd's own default (and what `containerd config default` writes there)
        _toml.set_key(containerd, "default_runtime_name", "runc")
    path = [*cri_plugin_path(version), "containerd", "runtimes"]
    while path:
        node = _toml.get_path(doc, path)
        parent = _toml.get_path(doc, path[:-1]) if len(path) > 1 else doc
        if node is None or len(node) > 0:
            break
        del parent[path[-1]]
        path = path[:-1]


def import_pattern(drop_in: str) -> str:
    return f"{PurePosixPath(drop_in).parent}/*.toml"


def _other_drop_ins(root: Path, doc: Any, drop_in: str) -> list[tuple[str, Path]]:
    """Files the main config imports, in containerd's order, except our own drop-in."""
    out = []
    for pattern in _toml.string_list(doc.get("imports")):
        for match in sorted(glob.glob(str(host_path(root, pattern)))):
            p = Path(match)
            node = "/" + str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
            if PurePosixPath(node) != PurePosixPath(drop_in) and p.is_file():
                out.append((node, p))
    return out


def _effective_cri(root: Path, main: Any, version: int, drop_in: str) -> Any:
    """The CRI section containerd < 2.1 would end up with: the main file's, replaced by each import's."""
    cri = _toml.get_path(main, cri_plugin_path(version))
    for node, path in _other_drop_ins(root, main, drop_in):
        other = _toml.parse(read_text(path), node)
        section = _toml.get_path(other, cri_plugin_path(version))
        if section is not None:
            cri = section
    return cri


def plan_configure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    config = req.config or DEFAULT_CONFIG
    runtime_path = req.runtime_path or NVIDIA_RUNTIME_PATH
    main_path = host_path(root, config)
    main_old = read_text(main_path)
    main = _toml.parse(main_old, config)
    version = config_version(main, config, req.config_version or 2)
    notes = _cri_disabled_note(main, config)

    if req.no_drop_in:
        if "version" not in main:
            main["version"] = version
        add_nvidia_runtime(main, version, runtime_path, req.set_as_default, req.cdi)
        change = FileChange(config, main_path, main_old, _toml.dumps(main))
        return RuntimePlan("containerd", (change,), RESTART, notes)

    drop_in = req.drop_in or DEFAULT_DROP_IN
    drop_path = host_path(root, drop_in)
    drop_old = read_text(drop_path)
    _toml.parse(drop_old, drop_in)  # refuse to overwrite a drop-in an admin broke by hand without saying so

    source = _effective_cri(root, main, version, drop_in)
    out = tomlkit.document()
    for line in DROP_IN_HEADER.format(main=config).splitlines():
        out.add(tomlkit.comment(line[2:] if line.startswith("# ") else line.lstrip("#")))
    out["version"] = version
    if source is not None:
        out["plugins"] = tomlkit.table(is_super_table=True)
        out["plugins"][CRI_PLUGIN[version]] = _toml.copy_table(source)
    add_nvidia_runtime(out, version, runtime_path, req.set_as_default, req.cdi, source_cri=source)
    drop_new = _toml.dumps(out).rstrip("\n") + "\n"

    imports = _toml.string_list(main.get("imports"))
    pattern = import_pattern(drop_in)
    if pattern not in imports:
        if "version" not in main:
            main["version"] = version
        array = tomlkit.array()
        array.extend([*imports, pattern])
        main["imports"] = array
    main_change = FileChange(config, main_path, main_old, _toml.dumps(main))
    drop_change = FileChange(drop_in, drop_path, drop_old, drop_new)
    return RuntimePlan("containerd", (drop_change, main_change), RESTART, notes)


def plan_unconfigure(req: ConfigureRequest, root: Path) -> RuntimePlan:
    config = req.config or DEFAULT_CONFIG
    main_path = host_path(root, config)
    main_old = read_text(main_path)
    main = _toml.parse(main_old, config)
    if main_old is None:
        main_change = FileChange(config, main_path, None, None)
    else:
        version = config_version(main, config, 2)
        remove_nvidia_runtime(main, version)
        main_change = FileChange(config, main_path, main_old, _toml.dumps(main))
    if req.no_drop_in:
        return RuntimePlan("containerd", (main_change,), RESTART)

    drop_in = req.drop_in or DEFAULT_DROP_IN
    drop_path = host_path(root, drop_in)
    drop_old = read_text(drop_path)
    drop_change = FileChange(drop_in, drop_path, drop_old, None)
    pattern = import_pattern(drop_in)
    imports = _toml.string_list(main.get("imports"))
    others = [n for n, _ in _other_drop_ins(root, main, drop_in) if PurePosixPath(n).match(pattern)]
    if main_old is not None and pattern in imports and not others:
        remaining = [i for i in imports if i != pattern]
        if remaining:
            array = tomlkit.array()
            array.extend(remaining)
            main["imports"] = array
        else:
            del main["imports"]
        main_change = FileChange(config, main_path, main_old, _toml.dumps(main))
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
