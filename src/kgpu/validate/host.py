"""Steps 1, 3, 5 and 6: what the node's files say, read under a root so tests use fixture trees.

Each step is a reader (I/O, returns plain facts) and a judge (pure, facts → :class:`StepResult`).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.host.driverroot import find_binary
from kgpu.validate.result import StepResult, failed, passed

# ---------------------------------------------------------------- step 1: driver

_NVRM_VERSION = re.compile(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s")
_DRIVER_FIX = (
    "install the NVIDIA driver for this kernel and load it: `modprobe nvidia` (a driver container "
    "such as the GPU Operator's loads it for you); `dmesg | grep -i nvrm` says why it did not load"
)


@dataclass(frozen=True, slots=True)
class DriverFacts:
    modules: tuple[str, ...]
    """Loaded kernel modules whose names start with ``nvidia``."""
    modules_readable: bool
    version_text: str | None
    """First line of /proc/driver/nvidia/version, or None when absent."""


def read_driver_facts(root: Path) -> DriverFacts:
    try:
        lines = (root / "proc/modules").read_text().splitlines()
        readable = True
    except OSError:
        lines, readable = [], False
    modules = tuple(
        line.split()[0] for line in lines if line.split() and line.split()[0].startswith("nvidia")
    )
    try:
        version = (root / "proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        version = None
    return DriverFacts(modules, readable, version)


def kernel_driver_version(version_text: str | None) -> str | None:
    """The driver version in /proc/driver/nvidia/version's first line.

    ``NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build …`` → ``580.65.06``.
    """
    if not version_text:
        return None
    m = _NVRM_VERSION.search(version_text + " ")
    return m.group(1) if m else None


def judge_driver(facts: DriverFacts) -> StepResult:
    if facts.modules_readable and "nvidia" not in facts.modules:
        return failed("driver", "kernel module nvidia is not loaded (not in /proc/modules)", _DRIVER_FIX)
    version = kernel_driver_version(facts.version_text)
    if facts.version_text is None:
        return failed(
            "driver",
            "/proc/driver/nvidia/version is missing: the NVIDIA kernel driver is not loaded",
            _DRIVER_FIX,
        )
    if version is None:
        return failed(
            "driver",
            f"/proc/driver/nvidia/version has no driver version: {facts.version_text!r}",
            "reinstall the NVIDIA driver; the kernel module looks damaged",
        )
    flavour = "open" if "Open Kernel Module" in facts.version_text else "proprietary"
    loaded = ", ".join(facts.modules) if facts.modules else "/proc/modules unreadable"
    detail = f"NVIDIA kernel driver {version} ({flavour} kernel modules) loaded: {loaded}"
    if facts.modules and "nvidia_uvm" not in facts.modules:
        detail += "; nvidia_uvm is not loaded yet (CUDA loads it on first use through nvidia-modprobe)"
    return passed("driver", detail)


# ---------------------------------------------------------------- step 3: device nodes


@dataclass(frozen=True, slots=True)
class DeviceNode:
    path: str
    """As the container sees it, e.g. ``/dev/nvidia0``."""
    exists: bool
    char_device: bool
    rdev: tuple[int, int] | None
    open_error: str | None


def read_device_node(root: Path, path: str) -> DeviceNode:
    full = root / path.lstrip("/")
    try:
        st = full.stat()
    except OSError:
        return DeviceNode(path, False, False, None, None)
    is_chr = stat.S_ISCHR(st.st_mode)
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if is_chr else None
    try:
        fd = os.open(full, os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
        error = None
    except OSError as exc:
        error = exc.strerror or str(exc)
    return DeviceNode(path, True, is_chr, rdev, error)


def required_device_nodes(minors: list[int]) -> list[str]:
    return ["/dev/nvidiactl", "/dev/nvidia-uvm", *(f"/dev/nvidia{m}" for m in minors)]


def judge_device_nodes(nodes: list[DeviceNode]) -> StepResult:
    missing = [n.path for n in nodes if not n.exists]
    if missing:
        minors = [p.removeprefix("/dev/nvidia") for p in missing if p.removeprefix("/dev/nvidia").isdigit()]
        uvm = "/dev/nvidia-uvm" in missing
        args = " ".join([*(f"-c={m}" for m in minors or ["0"]), *(["-u"] if uvm else [])])
        fix = (
            f"create them: `nvidia-modprobe {args}` (or every node at once: `nvidia-ctk system "
            "create-device-nodes --control-devices --load-kernel-modules`)"
        )
        if uvm and len(missing) == 1:
            fix = "load nvidia-uvm and create its node: `nvidia-modprobe -u -c=0`"
        return failed("device-nodes", f"missing: {', '.join(missing)}", fix)
    unopenable = [f"{n.path} ({n.open_error})" for n in nodes if n.open_error]
    if unopenable:
        return failed(
            "device-nodes",
            f"cannot open: {', '.join(unopenable)}",
            "the NVIDIA device nodes must be readable and writable (mode 0666, as nvidia-modprobe "
            "creates them); check the container's device cgroup and securityContext",
        )
    described = ", ".join(f"{n.path} {n.rdev[0]}:{n.rdev[1]}" if n.rdev else n.path for n in nodes)
    return passed("device-nodes", f"{len(nodes)} present and openable read-write: {described}")


# ---------------------------------------------------------------- step 5: container runtime

_CONTAINERD_CONFIGS = (
    "etc/containerd/config.toml",
    "var/lib/rancher/rke2/agent/etc/containerd/config.toml",
    "var/lib/rancher/k3s/agent/etc/containerd/config.toml",
)
_RUNTIME_FIX = (
    "install the NVIDIA Container Toolkit and configure your runtime: `nvidia-ctk runtime configure "
    "--runtime=containerd` (or docker, crio), then restart it; use the RuntimeClass `nvidia` or make it "
    "the default"
)


@dataclass(frozen=True, slots=True)
class RuntimeHandler:
    runtime: str
    """containerd, docker or cri-o."""
    config: str
    handler: str
    binary: str | None
    binary_present: bool
    default: bool


@dataclass(frozen=True, slots=True)
class RuntimeFacts:
    configs_found: tuple[str, ...] = ()
    handlers: tuple[RuntimeHandler, ...] = ()
    cdi_enabled: tuple[str, ...] = ()
    """Configs that enable CDI (containerd ``enable_cdi``)."""
    cdi_specs: tuple[str, ...] = ()
    """CDI spec files for nvidia.com under /etc/cdi and /var/run/cdi."""
    errors: tuple[str, ...] = field(default=())


def _walk(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    out: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out.extend(_walk(value, (*path, str(key))))
    return out


def _containerd_handlers(root: Path, rel: str, doc: dict[str, Any]) -> tuple[list[RuntimeHandler], bool]:
    handlers: list[RuntimeHandler] = []
    cdi = False
    for path, table in _walk(doc):
        if table.get("enable_cdi") is True:
            cdi = True
        if len(path) >= 2 and path[-2] == "runtimes" and "nvidia" in path[-1]:
            opts = table.get("options", {})
            binary = opts.get("BinaryName") if isinstance(opts, dict) else None
            parent = next((t for p, t in _walk(doc) if p == path[:-2]), {})
            default = parent.get("default_runtime_name") == path[-1]
            present = bool(binary) and (root / str(binary).lstrip("/")).exists()
            handlers.append(RuntimeHandler("containerd", "/" + rel, path[-1], binary, present, default))
    return handlers, cdi


def read_runtime_facts(root: Path) -> RuntimeFacts:
    found: list[str] = []
    handlers: list[RuntimeHandler] = []
    cdi_enabled: list[str] = []
    errors: list[str] = []
    for rel in _CONTAINERD_CONFIGS:
        files = [root / rel]
        conf_d = (root / rel).parent / "conf.d"
        if conf_d.is_dir():
            files += sorted(conf_d.glob("*.toml"))
        for f in files:
            if not f.is_file():
                continue
            shown = "/" + str(f.relative_to(root))
            found.append(shown)
            try:
                doc = tomllib.loads(f.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                errors.append(f"{shown}: {exc}")
                continue
            hs, cdi = _containerd_handlers(root, shown.lstrip("/"), doc)
            handlers += hs
            if cdi:
                cdi_enabled.append(shown)
    daemon_json = root / "etc/docker/daemon.json"
    if daemon_json.is_file():
        import json

        found.append("/etc/docker/daemon.json")
        try:
            doc = json.loads(daemon_json.read_text() or "{}")
            for name, spec in (doc.get("runtimes") or {}).items():
                if "nvidia" in name:
                    binary = spec.get("path") if isinstance(spec, dict) else None
                    present = bool(binary) and (
                        (root / str(binary).lstrip("/")).exists()
                        or find_binary(root, str(binary)) is not None
                    )
                    handlers.append(
                        RuntimeHandler(
                            "docker",
                            "/etc/docker/daemon.json",
                            name,
                            binary,
                            present,
                            doc.get("default-runtime") == name,
                        )
                    )
        except (ValueError, AttributeError) as exc:
            errors.append(f"/etc/docker/daemon.json: {exc}")
    crio_files = [root / "etc/crio/crio.conf", *sorted((root / "etc/crio/crio.conf.d").glob("*"))]
    for f in crio_files:
        if not f.is_file():
            continue
        shown = "/" + str(f.relative_to(root))
        found.append(shown)
        try:
            doc = tomllib.loads(f.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            errors.append(f"{shown}: {exc}")
            continue
        rt = doc.get("crio", {}).get("runtime", {})
        for name, spec in (rt.get("runtimes") or {}).items():
            if "nvidia" in name and isinstance(spec, dict):
                binary = spec.get("runtime_path")
                present = bool(binary) and (root / str(binary).lstrip("/")).exists()
                handlers.append(
                    RuntimeHandler("cri-o", shown, name, binary, present, rt.get("default_runtime") == name)
                )
    specs = [
        f"/{p.relative_to(root)}"
        for d in ("etc/cdi", "var/run/cdi")
        for p in sorted((root / d).glob("*"))
        if p.is_file() and "nvidia" in p.read_text(errors="replace")
    ]
    return RuntimeFacts(tuple(found), tuple(handlers), tuple(cdi_enabled), tuple(specs), tuple(errors))


def judge_runtime(facts: RuntimeFacts) -> StepResult:
    if facts.errors:
        return failed(
            "runtime",
            f"unreadable runtime config: {'; '.join(facts.errors)}",
            "fix the syntax error (a backup from the last edit is usually next to the file)",
        )
    if not facts.configs_found:
        return failed(
            "runtime",
            "no container runtime config found (looked for containerd config.toml, "
            "/etc/docker/daemon.json, /etc/crio)",
            _RUNTIME_FIX,
        )
    usable = [h for h in facts.handlers if h.binary_present]
    broken = [h for h in facts.handlers if not h.binary_present]
    cdi_ok = bool(facts.cdi_enabled and facts.cdi_specs)
    if not usable and not cdi_ok:
        if broken:
            h = broken[0]
            return failed(
                "runtime",
                f"{h.runtime} {h.config}: runtime {h.handler!r} points at {h.binary}, which does not exist",
                "install the NVIDIA Container Toolkit (nvidia-container-runtime)",
            )
        return failed("runtime", f"no NVIDIA runtime in {', '.join(facts.configs_found)}", _RUNTIME_FIX)
    parts = [
        f"{h.runtime} {h.config}: runtime {h.handler!r} → {h.binary}" + (" (default)" if h.default else "")
        for h in usable
    ]
    if cdi_ok:
        parts.append(f"CDI enabled in {', '.join(facts.cdi_enabled)}, specs {', '.join(facts.cdi_specs)}")
    if usable and not any(h.default for h in usable):
        parts.append(f"not the default runtime: GPU pods need runtimeClassName: {usable[0].handler}")
    return passed("runtime", "; ".join(parts))


# ---------------------------------------------------------------- step 6: device plugin

DEVICE_PLUGIN_DIR = "var/lib/kubelet/device-plugins"


@dataclass(frozen=True, slots=True)
class PluginFacts:
    kubelet_socket: bool
    plugin_sockets: tuple[str, ...]
    """Sockets in the device-plugins directory named as NVIDIA names GPU plugins (``nvidia-*.sock``)."""


def read_plugin_facts(root: Path) -> PluginFacts:
    d = root / DEVICE_PLUGIN_DIR
    kubelet = (d / "kubelet.sock").exists()
    sockets = tuple(sorted(p.name for p in d.glob("nvidia*.sock"))) if d.is_dir() else ()
    return PluginFacts(kubelet, sockets)


def judge_plugin(facts: PluginFacts, allocatable: str | None, api_note: str) -> StepResult:
    """``allocatable``: the node's ``nvidia.com/gpu`` allocatable from the API, or None when not checked."""
    where = "/" + DEVICE_PLUGIN_DIR
    if not facts.kubelet_socket:
        return failed(
            "device-plugin",
            f"no kubelet.sock in {where}: the kubelet is not running here "
            "(or its root dir is not /var/lib/kubelet)",
            "run validate on a Kubernetes node (the chart's Job does), or mount the kubelet's "
            "device-plugins directory",
        )
    if not facts.plugin_sockets:
        return failed(
            "device-plugin",
            f"kubelet.sock present but no nvidia-*.sock in {where}: the device plugin has not registered",
            "install the chart (`helm install kgpu deploy/helm/kgpu -n kube-system`) "
            "and check `kubectl -n kube-system logs ds/kgpu -c device-plugin`",
        )
    detail = f"{where}: {', '.join(facts.plugin_sockets)} next to kubelet.sock"
    if allocatable is None:
        return passed("device-plugin", f"{detail}; {api_note}")
    if allocatable in ("", "0"):
        return failed(
            "device-plugin",
            f"{detail}, but the node's allocatable nvidia.com/gpu is {allocatable or 'absent'}",
            "the plugin registered but advertises no healthy GPU: check its logs for XID/health events",
        )
    return passed("device-plugin", f"{detail}; node allocatable nvidia.com/gpu: {allocatable}")
