"""The kubelet: its version (``kubelet --version``), its config file (``cgroupDriver``, ``failSwapOn``,
``containerRuntimeEndpoint``), the flags kubeadm and the distro packages pass it, and the device-plugin
directory where ``kubelet.sock`` lives."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kgpu.errors import ConfigError
from kgpu.host.paths import read_text, under
from kgpu.host.run import program_output
from kgpu.host.toolkit import find_binary

DEFAULT_CONFIG = "/var/lib/kubelet/config.yaml"
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = f"{DEVICE_PLUGIN_DIR}/kubelet.sock"
# Where kubeadm and the deb/rpm packages put extra kubelet flags.
FLAG_FILES = ("/var/lib/kubelet/kubeadm-flags.env", "/etc/default/kubelet", "/etc/sysconfig/kubelet")
_VERSION_RE = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
_BINARIES = (
    ("kubelet", ("/usr/bin", "/usr/local/bin", "/opt/bin", "/var/lib/rancher/rke2/bin")),
    ("k3s", ("/usr/local/bin", "/usr/bin")),
)


@dataclass(frozen=True, slots=True)
class Kubelet:
    binary: str | None
    version: tuple[int, int, int] | None
    version_text: str | None
    config_path: str
    config_exists: bool
    config: dict[str, Any] = field(default_factory=dict)
    config_error: str | None = None
    flags: dict[str, str] = field(default_factory=dict)
    """``--name=value`` flags found in the flag files, by name without dashes."""
    flag_sources: tuple[str, ...] = ()
    device_plugin_dir: bool = False
    socket_present: bool = False

    @property
    def installed(self) -> bool:
        return self.binary is not None or self.config_exists

    @property
    def embedded(self) -> str | None:
        """``k3s`` or ``rke2`` when the kubelet is embedded in those distributions and configured by them."""
        if self.config_exists or "cgroup-driver" in self.flags or self.binary is None:
            return None
        for name in ("k3s", "rke2"):
            if f"/{name}" in self.binary:
                return name
        return None

    @property
    def cgroup_driver(self) -> str:
        """The flag wins over the file; the KubeletConfiguration default is ``cgroupfs``."""
        return self.flags.get("cgroup-driver") or str(self.config.get("cgroupDriver", "cgroupfs"))

    @property
    def cgroup_driver_source(self) -> str:
        if "cgroup-driver" in self.flags:
            return "--cgroup-driver flag"
        if "cgroupDriver" in self.config:
            return f"{self.config_path}: cgroupDriver"
        return (
            f"{self.config_path}: cgroupDriver not set (default cgroupfs)"
            if self.config_exists
            else "default"
        )

    @property
    def runtime_endpoint(self) -> str | None:
        return self.flags.get("container-runtime-endpoint") or (
            str(self.config["containerRuntimeEndpoint"])
            if "containerRuntimeEndpoint" in self.config
            else None
        )

    @property
    def runtime_name(self) -> str | None:
        """``containerd``, ``crio``, ``cri-dockerd`` or ``docker`` (dockershim) from the endpoint/flags."""
        endpoint = self.runtime_endpoint or ""
        for needle, name in (("cri-dockerd", "cri-dockerd"), ("containerd", "containerd"), ("crio", "crio")):
            if needle in endpoint:
                return name
        if self.flags.get("container-runtime") == "docker":
            return "docker"
        return None

    @property
    def fail_swap_on(self) -> bool:
        flag = self.flags.get("fail-swap-on")
        if flag is not None:
            return flag.lower() not in ("false", "0")
        return bool(self.config.get("failSwapOn", True))


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION_RE.search(text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def _flags(root: Path) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    sources = []
    for path in FLAG_FILES:
        text = read_text(root, path)
        if text is None:
            continue
        sources.append(path)
        for line in text.splitlines():
            _, sep, value = line.partition("=")
            if not sep or line.lstrip().startswith("#"):
                continue
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            for word in (w for w in " ".join(words).split() if w.startswith("--")):
                name, _, arg = word[2:].partition("=")
                flags[name] = arg or "true"
    return flags, sources


def read_kubelet(root: Path, config_path: str = DEFAULT_CONFIG) -> Kubelet:
    binary = version = version_text = None
    for name, dirs in _BINARIES:
        binary = find_binary(root, name, dirs)
        if binary:
            output = program_output(under(root, binary), "--version")
            if output:
                version_text = output.strip().splitlines()[0]
                version = parse_version(version_text)
            break
    flags, sources = _flags(root)
    config_path = flags.get("config", config_path) if config_path == DEFAULT_CONFIG else config_path
    config: dict[str, Any] = {}
    error = None
    try:
        text = read_text(root, config_path)
    except ConfigError as exc:
        text, error = "", str(exc)
    if text:
        try:
            loaded = yaml.safe_load(text)
            if isinstance(loaded, dict):
                config = loaded
            elif loaded is not None:
                error = "not a YAML mapping"
        except yaml.YAMLError as exc:
            error = str(exc).replace("\n", " ")
    return Kubelet(
        binary=binary,
        version=version,
        version_text=version_text,
        config_path=config_path,
        config_exists=text is not None,
        config=config,
        config_error=error,
        flags=flags,
        flag_sources=tuple(sources),
        device_plugin_dir=under(root, DEVICE_PLUGIN_DIR).is_dir(),
        socket_present=under(root, KUBELET_SOCKET).exists(),
    )
