"""Values the container runtimes themselves would reject, refused before kgpu writes anything.

containerd, dockerd and CRI-O decode their configs into typed Go structs: ``plugins = 5``,
``imports = "notalist"``, ``runtime_type = 7`` or ``SystemdCgroup = "yes"`` stop them at start
("cannot unmarshal …"), and a runtime that does not start runs no pod at all. kgpu reads the same
keys, so it refuses such a file up front, naming the key, rather than copying a bad value into the
nvidia runtime or "updating" a file the runtime cannot load. Each check takes the plain parsed data
(``tomlkit``'s ``unwrap()`` or ``json.loads``).

Example::

    check_containerd(tomllib.loads(text), "/etc/containerd/config.toml")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kgpu.errors import ConfigError

CONTAINERD_CRI_PLUGINS = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime")

Kind = tuple[str, Callable[[Any], bool]]

TABLE: Kind = ("a table", lambda v: isinstance(v, Mapping))
STRING: Kind = ("a string", lambda v: isinstance(v, str))
BOOL: Kind = ("true or false", lambda v: isinstance(v, bool))
INT: Kind = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
STRINGS: Kind = ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v))

# containerd: a runtime under <cri plugin>.containerd.runtimes.<name>, as the CRI plugin decodes it
_CONTAINERD_RUNTIME: dict[str, Kind] = {
    "runtime_type": STRING,
    "runtime_path": STRING,
    "runtime_engine": STRING,
    "runtime_root": STRING,
    "pod_annotations": STRINGS,
    "container_annotations": STRINGS,
    "privileged_without_host_devices": BOOL,
    "base_runtime_spec": STRING,
    "cni_conf_dir": STRING,
    "snapshotter": STRING,
    "sandboxer": STRING,
    "options": TABLE,
}
_RUNC_OPTIONS: dict[str, Kind] = {
    "BinaryName": STRING,
    "Root": STRING,
    "SystemdCgroup": BOOL,
    "NoPivotRoot": BOOL,
    "NoNewKeyring": BOOL,
    "CriuPath": STRING,
    "CriuImagePath": STRING,
    "CriuWorkPath": STRING,
    "IoUid": INT,
    "IoGid": INT,
    "ShimCgroup": STRING,
}
_CRI_SECTION: dict[str, Kind] = {
    "enable_cdi": BOOL,
    "cdi_spec_dirs": STRINGS,
    "sandbox_image": STRING,
    "containerd": TABLE,
}
_CRI_CONTAINERD: dict[str, Kind] = {
    "default_runtime_name": STRING,
    "snapshotter": STRING,
    "runtimes": TABLE,
}
_CONTAINERD_TOP: dict[str, Kind] = {
    "version": INT,
    "root": STRING,
    "state": STRING,
    "imports": STRINGS,
    "disabled_plugins": STRINGS,
    "required_plugins": STRINGS,
    "plugins": TABLE,
}

_DOCKER_TOP: dict[str, Kind] = {
    "runtimes": ("an object", lambda v: isinstance(v, Mapping)),
    "default-runtime": STRING,
    "features": ("an object", lambda v: isinstance(v, Mapping)),
    "exec-opts": STRINGS,
    "data-root": STRING,
}
_DOCKER_RUNTIME: dict[str, Kind] = {
    "path": STRING,
    "runtimeArgs": STRINGS,
    "args": STRINGS,
    "runtimeType": STRING,
    "options": ("an object", lambda v: isinstance(v, Mapping)),
}

_CRIO_RUNTIME_SECTION: dict[str, Kind] = {
    "default_runtime": STRING,
    "runtimes": TABLE,
    "cgroup_manager": STRING,
}
_CRIO_RUNTIME: dict[str, Kind] = {
    "runtime_path": STRING,
    "runtime_type": STRING,
    "runtime_root": STRING,
    "runtime_config_path": STRING,
    "monitor_path": STRING,
    "monitor_cgroup": STRING,
    "monitor_env": STRINGS,
    "allowed_annotations": STRINGS,
    "privileged_without_host_devices": BOOL,
    "platform_runtime_paths": TABLE,
}


def _show(value: Any) -> str:
    """The value as the file spells it (TOML and JSON agree for these)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{…}"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        return str(value)


def _key(part: str) -> str:
    return part if part.replace("_", "").replace("-", "").isalnum() else json.dumps(part)


def _check(section: Any, keys: Mapping[str, Kind], where: list[str], node_path: str, runtime: str) -> None:
    if not isinstance(section, Mapping):
        return
    for key, (what, ok) in keys.items():
        if key in section and not ok(section[key]):
            dotted = ".".join(_key(p) for p in [*where, key])
            raise ConfigError(
                f"{node_path}: {dotted} = {_show(section[key])}: {runtime} expects {what} there and refuses "
                f"this file; fix it first, nothing was changed"
            )


def _sub(section: Any, key: str) -> Any:
    return section.get(key) if isinstance(section, Mapping) else None


def check_containerd(data: Mapping[str, Any], node_path: str) -> None:
    """Refuse what containerd would reject in the keys kgpu reads or writes."""
    _check(data, _CONTAINERD_TOP, [], node_path, "containerd")
    plugins = _sub(data, "plugins")
    for plugin in CONTAINERD_CRI_PLUGINS:
        where = ["plugins", plugin]
        cri = _sub(plugins, plugin)
        _check(plugins, {plugin: TABLE}, ["plugins"], node_path, "containerd")
        _check(cri, _CRI_SECTION, where, node_path, "containerd")
        containerd = _sub(cri, "containerd")
        _check(containerd, _CRI_CONTAINERD, [*where, "containerd"], node_path, "containerd")
        runtimes = _sub(containerd, "runtimes")
        for name, runtime in (runtimes or {}).items():
            at = [*where, "containerd", "runtimes", name]
            _check(runtimes, {name: TABLE}, at[:-1], node_path, "containerd")
            _check(runtime, _CONTAINERD_RUNTIME, at, node_path, "containerd")
            _check(_sub(runtime, "options"), _RUNC_OPTIONS, [*at, "options"], node_path, "containerd")


def check_docker(data: Mapping[str, Any], node_path: str) -> None:
    """Refuse what dockerd would reject in the keys kgpu reads or writes."""
    _check(data, _DOCKER_TOP, [], node_path, "dockerd")
    runtimes = _sub(data, "runtimes")
    for name, runtime in (runtimes or {}).items():
        _check(runtimes, {name: ("an object", lambda v: isinstance(v, Mapping))}, ["runtimes"], node_path, "dockerd")
        _check(runtime, _DOCKER_RUNTIME, ["runtimes", name], node_path, "dockerd")
    features = _sub(data, "features")
    for name in features or {}:
        _check(features, {name: BOOL}, ["features"], node_path, "dockerd")


def check_crio(data: Mapping[str, Any], node_path: str) -> None:
    """Refuse what CRI-O would reject in the keys kgpu reads or writes."""
    _check(data, {"crio": TABLE}, [], node_path, "CRI-O")
    crio = _sub(data, "crio")
    _check(crio, {"runtime": TABLE}, ["crio"], node_path, "CRI-O")
    runtime = _sub(crio, "runtime")
    _check(runtime, _CRIO_RUNTIME_SECTION, ["crio", "runtime"], node_path, "CRI-O")
    runtimes = _sub(runtime, "runtimes")
    for name, entry in (runtimes or {}).items():
        at = ["crio", "runtime", "runtimes", name]
        _check(runtimes, {name: TABLE}, at[:-1], node_path, "CRI-O")
        _check(entry, _CRIO_RUNTIME, at, node_path, "CRI-O")


def check_toolkit(data: Mapping[str, Any], node_path: str) -> None:
    """The NVIDIA Container Toolkit's config: the one table kgpu writes into."""
    _check(data, {"nvidia-container-cli": TABLE}, [], node_path, "nvidia-container-runtime")
    _check(_sub(data, "nvidia-container-cli"), {"root": STRING}, ["nvidia-container-cli"], node_path,
           "nvidia-container-runtime")
