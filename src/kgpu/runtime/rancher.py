"""k3s and RKE2: their containerd config is generated on every start, from a Go template.

Both render ``config.toml`` under their agent directory from a built-in template, or from
``config.toml.tmpl`` (containerd 1.x, config version 2) / ``config-v3.toml.tmpl`` (containerd 2.x,
config version 3) beside it when that exists. Editing ``config.toml`` is lost on the next restart,
so kgpu writes the template: ``{{ template "base" . }}`` (k3s's own config) followed by a marked
block that adds the nvidia runtime. Both also detect ``nvidia-container-runtime`` themselves and
add an ``nvidia`` runtime to the generated file; then there is nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kgpu.errors import ConfigError
from kgpu.runtime import _toml
from kgpu.runtime.containerd import CRI_PLUGIN, RUNC_SHIM, config_version
from kgpu.runtime.plan import (
    NVIDIA_RUNTIME_PATH,
    ConfigureRequest,
    FileChange,
    RuntimePlan,
    host_path,
    read_node,
    restore_original,
)

BASE_LINE = '{{ template "base" . }}\n'
BEGIN = "# BEGIN kgpu nvidia runtime (kgpu runtime configure)"
END = "# END kgpu nvidia runtime"


@dataclass(frozen=True, slots=True)
class RancherContainerd:
    distro: str
    """``k3s`` or ``rke2``."""
    directory: str
    """Node path of the agent's containerd directory."""

    @property
    def generated(self) -> str:
        return f"{self.directory}/config.toml"

    def template(self, version: int) -> str:
        return f"{self.directory}/{'config-v3.toml.tmpl' if version == 3 else 'config.toml.tmpl'}"

    @property
    def restart_command(self) -> str:
        if self.distro == "k3s":
            return "systemctl restart k3s   # k3s-agent on agent nodes"
        return "systemctl restart rke2-server   # rke2-agent on agent nodes"


RANCHER_DIRS = (
    RancherContainerd("rke2", "/var/lib/rancher/rke2/agent/etc/containerd"),
    RancherContainerd("k3s", "/var/lib/rancher/k3s/agent/etc/containerd"),
)


def detect(root: Path) -> RancherContainerd | None:
    """The k3s or RKE2 containerd directory on this node, if either is installed."""
    for candidate in RANCHER_DIRS:
        if host_path(root, candidate.directory).is_dir():
            return candidate
    return None


def _version(root: Path, rc: RancherContainerd, requested: int | None) -> int:
    if requested:
        return requested
    if host_path(root, rc.template(3)).exists():
        return 3
    if host_path(root, rc.template(2)).exists():
        return 2
    generated = read_node(root, rc.generated)[1]
    if generated is not None:
        return config_version(_toml.parse(generated, rc.generated), rc.generated, 3)
    return 3  # k3s and RKE2 ship containerd 2.x since their 1.31/1.32 releases


def _defines(name: str) -> re.Pattern[str]:
    return re.compile(r"""runtimes\.["']?""" + re.escape(name) + r"""["']?\s*\]""")


def _block(version: int, runtime_path: str, systemd_cgroup: bool | None, name: str) -> str:
    plugin = CRI_PLUGIN[version]
    lines = [
        BEGIN,
        f"[plugins.'{plugin}'.containerd.runtimes.'{name}']",
        f'  runtime_type = "{RUNC_SHIM}"',
        f"[plugins.'{plugin}'.containerd.runtimes.'{name}'.options]",
        f'  BinaryName = "{runtime_path}"',
    ]
    if systemd_cgroup is not None:
        lines.append(f"  SystemdCgroup = {'true' if systemd_cgroup else 'false'}")
    lines.append(END)
    return "\n".join(lines) + "\n"


def _strip_block(text: str) -> str:
    start = text.find(BEGIN)
    if start < 0:
        return text
    end = text.find(END, start)
    if end < 0:
        raise ConfigError(f"found '{BEGIN}' without '{END}'; restore the block's end marker")
    end += len(END)
    before = text[:start].rstrip("\n")
    after = text[end:].lstrip("\n")
    return (before + "\n" if before else "") + ("\n" + after if after else "")


def _same_template(a: str, b: str) -> bool:
    """Go templates are not TOML: the same text, give or take blank lines at the end."""
    return a.rstrip("\n") == b.rstrip("\n")


def _runc_systemd_cgroup(generated: Any, version: int) -> bool | None:
    runtimes = _toml.get_path(generated, ["plugins", CRI_PLUGIN[version], "containerd", "runtimes"])
    for name in ("runc", "crun"):
        value = _toml.get_path(runtimes, [name, "options", "SystemdCgroup"]) if runtimes is not None else None
        if value is not None:
            return bool(value)
    return None


def plan_configure(req: ConfigureRequest, root: Path, rc: RancherContainerd) -> RuntimePlan:
    version = _version(root, rc, req.config_version)
    name = req.runtime_name
    template = rc.template(version)
    template_at, old = read_node(root, template)
    unchanged = FileChange.of(template_at, old, old)
    generated_text = read_node(root, rc.generated)[1]
    generated = _toml.parse(generated_text, rc.generated) if generated_text is not None else None
    notes = [f"{rc.distro} detected: its containerd config is rendered from {template} on every start"]
    if req.set_as_default:
        notes.append(
            f"{rc.distro} owns default_runtime_name: set `default-runtime: nvidia` in "
            f"/etc/rancher/{rc.distro}/config.yaml (the --default-runtime flag) to make nvidia the default"
        )
    if req.cdi:
        notes.append(f"{rc.distro} sets enable_cdi in its base template; containerd 2.x enables CDI by default")

    has_nvidia = (
        generated is not None
        and _toml.get_path(generated, ["plugins", CRI_PLUGIN[version], "containerd", "runtimes", name])
        is not None
    )
    ours = old is not None and BEGIN in old
    if has_nvidia and not ours:
        notes.append(
            f"{rc.generated} already has the {name} runtime ({rc.distro} found nvidia-container-runtime itself)"
        )
        return RuntimePlan("containerd", (unchanged,), None, tuple(notes))
    body = _strip_block(old) if old is not None else BASE_LINE
    if _defines(name).search(body):
        notes.append(f"{template} already defines the {name} runtime itself; left as it is")
        return RuntimePlan("containerd", (unchanged,), None, tuple(notes))
    systemd = _runc_systemd_cgroup(generated, version) if generated is not None else None
    block = _block(version, req.runtime_path or NVIDIA_RUNTIME_PATH, systemd, name)
    new = body.rstrip("\n") + "\n\n" + block
    return RuntimePlan("containerd", (replace(unchanged, new_text=new),), rc.restart_command, tuple(notes))


def plan_unconfigure(req: ConfigureRequest, root: Path, rc: RancherContainerd) -> RuntimePlan:
    changes = []
    for version in (3, 2):
        template = rc.template(version)
        where, old = read_node(root, template)
        if old is None or BEGIN not in old:
            continue
        new: str | None = _strip_block(old)
        if new is not None and new.strip() in ("", BASE_LINE.strip()):
            new = None  # the template only existed to carry our block
        changes.append(restore_original(FileChange.of(where, old, new), _same_template))
    return RuntimePlan("containerd", tuple(changes), rc.restart_command if changes else None)
