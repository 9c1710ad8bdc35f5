"""CDI spec values, their wire form, the minimum ``cdiVersion`` they need, and validation.

Field names and version rules follow the Container Device Interface specification
(``tags.cncf.io/container-device-interface/specs-go``): a spec has ``cdiVersion``, ``kind``
(``vendor/class``), ``devices`` (each a ``name`` plus ``containerEdits``) and spec-wide
``containerEdits`` (``env``, ``deviceNodes``, ``mounts``, ``hooks``).

Example::

    gpu0 = Device("0", ContainerEdits(device_nodes=(DeviceNode("/dev/nvidia0"),)))
    render(Spec(kind="nvidia.com/gpu", devices=(gpu0,)), "yaml")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KNOWN_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
FLOOR_VERSION = "0.5.0"
"""kgpu never writes older specs: 0.5.0 is what containerd ≥ 1.7, CRI-O and docker all read."""
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
READ_ONLY_BIND = ("ro", "nosuid", "nodev", "rbind", "rprivate")
"""nvidia-ctk's options for the driver's files: read-only, recursive and private (no mount events leak back)."""

_VENDOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_CLASS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_DEVICE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class DeviceNode:
    path: str
    """Path in the container."""
    host_path: str | None = None
    """Path on the host when it differs from ``path`` (CDI 0.5.0)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.host_path and self.host_path != self.path:
            out["hostPath"] = self.host_path
        return out


@dataclass(frozen=True, slots=True)
class Mount:
    host_path: str
    container_path: str
    options: tuple[str, ...] = READ_ONLY_BIND

    def to_json(self) -> dict[str, Any]:
        return {"hostPath": self.host_path, "containerPath": self.container_path, "options": list(self.options)}


@dataclass(frozen=True, slots=True)
class Hook:
    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hookName": self.hook_name, "path": self.path, "args": list(self.args)}
        if self.env:
            out["env"] = list(self.env)
        return out


@dataclass(frozen=True, slots=True)
class ContainerEdits:
    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.env:
            out["env"] = list(self.env)
        if self.device_nodes:
            out["deviceNodes"] = [d.to_json() for d in self.device_nodes]
        if self.mounts:
            out["mounts"] = [m.to_json() for m in self.mounts]
        if self.hooks:
            out["hooks"] = [h.to_json() for h in self.hooks]
        return out


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    edits: ContainerEdits

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "containerEdits": self.edits.to_json()}


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str
    devices: tuple[Device, ...]
    edits: ContainerEdits = field(default_factory=ContainerEdits)
    version: str | None = None
    """None: the lowest version that supports what the spec uses (never below 0.5.0)."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "devices": [d.to_json() for d in self.devices],
            "containerEdits": self.edits.to_json(),
        }
        version = self.version or minimum_version(body)
        return {"cdiVersion": version, **body}


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


def minimum_version(doc: dict[str, Any], floor: str = FLOOR_VERSION) -> str:
    """The lowest CDI version that supports what ``doc`` uses, as the CDI library computes it."""
    edits = [d.get("containerEdits") or {} for d in doc.get("devices") or []]
    edits.append(doc.get("containerEdits") or {})
    need = "0.3.0"
    if any(m.get("type") for e in edits for m in e.get("mounts") or []):
        need = "0.4.0"
    names = [str(d.get("name", "")) for d in doc.get("devices") or []]
    host_paths = any(n.get("hostPath") for e in edits for n in e.get("deviceNodes") or [])
    if host_paths or any(n[:1].isdigit() for n in names):
        need = "0.5.0"
    _, _, cls = str(doc.get("kind", "")).partition("/")
    if doc.get("annotations") or any(d.get("annotations") for d in doc.get("devices") or []) or "." in cls:
        need = "0.6.0"
    if any(e.get("intelRdt") or e.get("additionalGids") for e in edits):
        need = "0.7.0"
    return max(need, floor, key=_vkey)


def render(spec: Spec, fmt: str = "yaml") -> str:
    """The spec as nvidia-ctk writes it: YAML with sorted keys after ``---``, or indented JSON."""
    doc = spec.to_json()
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"

    return "---\n" + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)


@dataclass(frozen=True, slots=True)
class Validation:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def _exists(root: Path, node_path: str) -> bool:
    p = root / node_path.lstrip("/")
    return p.exists() or p.is_symlink()


def validate(doc: Any, root: Path = Path("/")) -> Validation:
    """Check a parsed spec against the CDI schema's shape and the host under ``root``.

    Errors: a malformed field, or a device node or mount whose host path does not exist.
    Warnings: a hook binary that is not on the host (containers using the device would fail to start).
    """
    errors: list[str] = []
    warnings: list[str] = []
    if not isinstance(doc, dict):
        return Validation(("the spec is not a mapping",), ())
    version = str(doc.get("cdiVersion", ""))
    if version.lstrip("v") not in KNOWN_VERSIONS:
        errors.append(f"cdiVersion {version!r}: allowed {', '.join(KNOWN_VERSIONS)}")
    else:
        need = minimum_version(doc, floor="0.3.0")
        if _vkey(version) < _vkey(need):
            errors.append(f"cdiVersion {version} is too old for what the spec uses: at least {need}")
    vendor, _, cls = str(doc.get("kind", "")).partition("/")
    if not (_VENDOR.match(vendor) and _CLASS.match(cls)):
        errors.append(f"kind {doc.get('kind')!r}: expected vendor/class such as nvidia.com/gpu")
    devices = doc.get("devices")
    if not isinstance(devices, list) or not devices:
        errors.append("devices: at least one device is required")
        devices = []
    seen: set[str] = set()
    for i, device in enumerate(devices):
        name = str(device.get("name", "")) if isinstance(device, dict) else ""
        where = f"devices[{i}] ({name or 'no name'})"
        if not _DEVICE.match(name):
            errors.append(f"{where}: invalid device name {name!r}")
        if name in seen:
            errors.append(f"{where}: duplicate device name")
        seen.add(name)
        edits = device.get("containerEdits") if isinstance(device, dict) else None
        if not edits:
            errors.append(f"{where}: containerEdits must not be empty")
            continue
        _check_edits(edits, where, root, errors, warnings)
    _check_edits(doc.get("containerEdits") or {}, "containerEdits", root, errors, warnings)
    return Validation(tuple(errors), tuple(dict.fromkeys(warnings)))


def _check_edits(edits: Any, where: str, root: Path, errors: list[str], warnings: list[str]) -> None:
    if not isinstance(edits, dict):
        errors.append(f"{where}: containerEdits is not a mapping")
        return
    for env in edits.get("env") or []:
        if "=" not in str(env):
            errors.append(f"{where}: env entry {env!r} is not NAME=VALUE")
    for node in edits.get("deviceNodes") or []:
        path = str(node.get("path", ""))
        host = str(node.get("hostPath") or path)
        if not path.startswith("/"):
            errors.append(f"{where}: device node path {path!r} is not absolute")
        elif not _exists(root, host):
            errors.append(f"{where}: device node {host} does not exist on the host")
    for mount in edits.get("mounts") or []:
        host = str(mount.get("hostPath", ""))
        container = str(mount.get("containerPath", ""))
        if not host.startswith("/") or not container.startswith("/"):
            errors.append(f"{where}: mount {host!r} -> {container!r}: both paths must be absolute")
        elif not _exists(root, host):
            errors.append(f"{where}: mount source {host} does not exist on the host")
    for hook in edits.get("hooks") or []:
        name = hook.get("hookName")
        if name not in HOOK_NAMES:
            errors.append(f"{where}: hookName {name!r}: allowed {', '.join(HOOK_NAMES)}")
        path = str(hook.get("path", ""))
        if not path.startswith("/"):
            errors.append(f"{where}: hook path {path!r} is not absolute")
        elif not _exists(root, path):
            warnings.append(f"hook {path} is not installed: containers given this device would fail to start")
