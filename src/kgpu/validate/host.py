"""Steps 1, 3, 5 and 6: what the node's files say, read under a root so tests use fixture trees.

Each step is a reader (I/O, returns plain facts) and a judge (pure, facts → :class:`StepResult`).
Step 5 reuses the doctor's runtime checks (:mod:`kgpu.doctor.checks.runtime`) rather than a second opinion.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kgpu.doctor import GpuFacts, NodeFacts, run_checks, select
from kgpu.host.containerd import read_containerd
from kgpu.host.crio import read_crio
from kgpu.host.docker import read_docker
from kgpu.host.facts import read_host_facts
from kgpu.validate.result import StepResult, failed, passed

if TYPE_CHECKING:
    from kgpu.doctor import Finding

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
        lines = (root / "proc/modules").read_text(errors="replace").splitlines()
        readable = True
    except OSError:
        lines, readable = [], False
    modules = tuple(
        line.split()[0] for line in lines if line.split() and line.split()[0].startswith("nvidia")
    )
    try:
        version = (root / "proc/driver/nvidia/version").read_text(errors="replace").splitlines()[0].strip()
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

# The doctor's checks of the runtimes and the toolkit between them and the GPU (kgpu.doctor.checks.runtime).
RUNTIME_CHECKS = ("runtime.toolkit", "runtime.containerd", "runtime.docker", "runtime.crio")
_RUNTIMES = ("runtime.containerd", "runtime.docker", "runtime.crio")
_NO_RUNTIME_FIX = (
    "install containerd (or CRI-O) and the NVIDIA Container Toolkit, then `kgpu runtime configure "
    "--runtime containerd` and `systemctl restart containerd`"
)


def judge_runtime(findings: list[Finding]) -> StepResult:
    """Step 5 from the doctor's runtime findings: any failure breaks the link; a configured runtime passes it."""
    broken = [f for f in findings if f.status == "fail"]
    if broken:
        f = broken[0]
        evidence = "; ".join(line for line in f.evidence.splitlines() if line.strip())
        return failed("runtime", f"{f.id}: {f.title}" + (f" ({evidence})" if evidence else ""), f.fix)
    configured = [f for f in findings if f.id in _RUNTIMES and f.status in ("pass", "warn")]
    if not configured:
        return failed("runtime", "no container runtime installed (no containerd, dockerd or crio binary "
                      "or config)", _NO_RUNTIME_FIX)
    parts = [f"{f.id}: {f.title}" for f in findings if f.status == "pass"]
    parts += [f"warning {f.id}: {f.title} (fix: {f.fix.splitlines()[0] if f.fix else '-'})"
              for f in findings if f.status == "warn"]
    return passed("runtime", "; ".join(parts))


# kgpu's driver-mounts strategy hands a container its GPU's device nodes and the driver's files as plain
# mounts: the runtime only has to run an ordinary container, with no NVIDIA runtime, hook or toolkit.
TOOLKIT_FREE = frozenset({"driver-mounts"})


def needs_nvidia_runtime(device_list_strategy: tuple[str, ...]) -> bool:
    """Whether the device plugin's strategies rely on the NVIDIA runtime (every strategy but driver-mounts)."""
    return not device_list_strategy or not set(device_list_strategy) <= TOOLKIT_FREE


@dataclass(frozen=True, slots=True)
class RuntimeInstall:
    """A container runtime on the node, and what would stop it from running any container for the kubelet."""

    name: str
    config: str
    problem: str | None = None
    fix: str = ""


def read_runtime_installs(root: Path) -> list[RuntimeInstall]:

    out = []
    containerd = read_containerd(root)
    if containerd.installed and containerd.config is not None:
        cfg = containerd.config
        if cfg.error:
            out.append(RuntimeInstall("containerd", cfg.path, f"{cfg.path} does not parse: {cfg.error}",
                                      f"fix the TOML in {cfg.path}, then systemctl restart containerd"))
        elif cfg.cri_disabled:
            out.append(RuntimeInstall("containerd", cfg.path, f"{cfg.path} disables the CRI plugin",
                                      f'remove "cri" from disabled_plugins in {cfg.path}, then systemctl '
                                      "restart containerd"))
        else:
            out.append(RuntimeInstall(cfg.flavour, cfg.path if cfg.exists else f"{cfg.path} (built-in defaults)"))
    crio = read_crio(root)
    if crio.installed:
        files = ", ".join(crio.config.files) or "/etc/crio/crio.conf (built-in defaults)"
        problem = f"{files} does not parse: {crio.config.error}" if crio.config.error else None
        fix = "fix the TOML, then systemctl restart crio" if problem else ""
        out.append(RuntimeInstall("crio", files, problem, fix))
    docker = read_docker(root)
    if docker.installed:
        problem = f"{docker.config.path}: {docker.config.error}" if docker.config.error else None
        out.append(RuntimeInstall("docker", docker.config.path, problem,
                                  f"fix {docker.config.path}, then systemctl restart docker" if problem else ""))
    return out


def judge_driver_mounts(installs: list[RuntimeInstall], mounted: tuple[str, ...], driver_root: str,
                        source: str) -> StepResult:
    """Step 5 for kgpu's driver-mounts strategy: a working runtime and the driver files to mount, no toolkit.

    ``mounted``: the container paths the device plugin mounts (``/usr/local/nvidia/lib64/libcuda.so.1``, …).
    """
    strategy = f"device list strategy driver-mounts ({source})"
    if not installs:
        return failed("runtime", f"{strategy}, but no container runtime is installed (no containerd, crio or "
                      "dockerd binary or config)", "install containerd (or CRI-O) for the kubelet")
    broken = [i for i in installs if i.problem]
    if len(broken) == len(installs):
        return failed("runtime", f"{strategy}: {broken[0].problem}", broken[0].fix)
    names = {Path(p).name for p in mounted}
    missing = [lib for lib in ("libcuda.so.1", "libnvidia-ml.so.1") if lib not in names]
    if missing:
        return failed(
            "runtime",
            f"{strategy}: the driver root {driver_root} has no {' or '.join(missing)} to mount into GPU containers",
            "set the device plugin's nvidiaDriverRoot (NVIDIA_DRIVER_ROOT) to where the driver is installed on "
            "the host (/, /usr/local/nvidia, /run/nvidia/driver, /home/kubernetes/bin/nvidia)",
        )
    working = ", ".join(f"{i.name} ({i.config})" for i in installs if not i.problem)
    shown = ", ".join(n for n in ("libcuda.so.1", "libnvidia-ml.so.1", "nvidia-smi") if n in names)
    return passed(
        "runtime",
        f"{strategy}: no NVIDIA runtime or container toolkit needed; {working} runs the containers; the device "
        f"plugin mounts {len(mounted)} driver files from {driver_root} read-only ({shown}, ...)",
    )


def read_runtime_findings(root: Path) -> list[Finding]:
    """Run the doctor's runtime checks on the node under ``root`` (host facts only: no GPU is opened)."""

    facts = NodeFacts(host=read_host_facts(root), gpu=GpuFacts("none", None, "not read by validate", None))
    return run_checks(facts, select(RUNTIME_CHECKS))


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
    """``allocatable``: the node's allocatable nvidia.com/* resources from the API, or None when not checked."""
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
            "and check `kubectl -n kube-system logs ds/kgpu-device-plugin`",
        )
    detail = f"{where}: {', '.join(facts.plugin_sockets)} next to kubelet.sock"
    if allocatable is None:
        return passed("device-plugin", f"{detail}; {api_note}")
    if allocatable in ("", "0"):
        return failed(
            "device-plugin",
            f"{detail}, but the node's allocatable nvidia.com/gpu is {allocatable or 'absent'} "
            "(and no other nvidia.com/ resource is advertised)",
            "the plugin registered but advertises no healthy GPU: check its logs for XID/health events",
        )
    return passed("device-plugin", f"{detail}; node allocatable {allocatable}")
