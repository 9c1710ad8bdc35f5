"""Plan the node's fixes from its facts (pure) and apply them (the one place that writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kgpu.cdi import CdiError, CdiOptions, generate_spec, render, validate
from kgpu.doctor.facts import GpuFacts
from kgpu.doctor.fixes import BLACKLIST_CONTENT, BLACKLIST_FILE, MODULES_FILE, SYSCTL_FILE, initramfs_command
from kgpu.fsio import Applied, apply_changes, locate
from kgpu.host.driverroot import CUDA_SONAME, NVML_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_library
from kgpu.host.facts import K8S_MODULES, K8S_SYSCTLS, HostFacts
from kgpu.host.paths import read_text
from kgpu.runtime import ConfigureRequest, FileChange, RuntimePlan, plan_configure

OPEN_SOURCE_DRIVERS = ("nouveau", "nova_core", "nova_drm")
CDI_SPEC_FILE = "/etc/cdi/nvidia.yaml"


@dataclass(frozen=True, slots=True)
class PrepareStep:
    check_id: str
    """The doctor check this step fixes, e.g. ``driver.nouveau``."""
    title: str
    changes: tuple[FileChange, ...]
    then: tuple[str, ...] = ()
    """Commands that make the change take effect now (printed, not run)."""

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)


@dataclass(frozen=True, slots=True)
class PreparePlan:
    steps: tuple[PrepareStep, ...]
    notes: tuple[str, ...] = field(default=())
    """What prepare leaves to the admin (and why), e.g. a hardening file that overrides a sysctl."""

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def _change(root: Path, node_path: str, new_text: str) -> FileChange:
    return FileChange.of(locate(root, node_path), read_text(root, node_path), new_text)


def _append_lines(root: Path, node_path: str, lines: list[str], header: str) -> FileChange:
    """Add ``lines`` to a config file, creating it with ``header`` when it does not exist."""
    old = read_text(root, node_path)
    base = old if old is not None else header
    if base and not base.endswith("\n"):
        base += "\n"
    return FileChange.of(locate(root, node_path), old, base + "".join(f"{ln}\n" for ln in lines))


def _nouveau(facts: HostFacts) -> PrepareStep | None:
    installed = facts.installed_modules
    loaded = [m for m in OPEN_SOURCE_DRIVERS if facts.module_loaded(m)]
    present = [m for m in OPEN_SOURCE_DRIVERS if installed is not None and installed.has(m)]
    unblocked = [m for m in dict.fromkeys(loaded + present) if m not in facts.blacklist]
    if not unblocked:
        return None
    old = read_text(facts.root, BLACKLIST_FILE)
    if old is None:
        change = _change(facts.root, BLACKLIST_FILE, BLACKLIST_CONTENT)
    else:
        wanted = [ln for ln in BLACKLIST_CONTENT.splitlines() if ln and not ln.startswith("#")]
        missing = [ln for ln in wanted if ln not in old.splitlines()]
        change = _append_lines(facts.root, BLACKLIST_FILE, missing, "")
    then = [f"{initramfs_command(facts.family)}   # so the initramfs does not load it either", "reboot"]
    return PrepareStep("driver.nouveau", f"blacklist {', '.join(unblocked)}", (change,), tuple(then))


def _modules(facts: HostFacts) -> PrepareStep | None:
    builtin = facts.installed_modules.builtin if facts.installed_modules else frozenset()
    missing = [m for m in K8S_MODULES if m not in facts.persisted_modules and m not in builtin]
    if not missing:
        return None
    change = _append_lines(facts.root, MODULES_FILE, missing, "# Written by kgpu: modules Kubernetes needs at boot.\n")
    not_loaded = [m for m in K8S_MODULES if not facts.module_available_now(m)]
    then = tuple(f"modprobe {m}" for m in not_loaded)
    return PrepareStep("k8s.kernel-modules", f"load {', '.join(missing)} at boot", (change,), then)


_SYSCTL_NAME = SYSCTL_FILE.rsplit("/", 1)[1]


def _applies_after_ours(source: str) -> bool:
    """Whether a sysctl setting's file is applied after ``/etc/sysctl.d/99-kubernetes.conf``."""
    path = source.rsplit(":", 1)[0]
    if path == "/etc/sysctl.conf":
        return True
    return path.rsplit("/", 1)[1] > _SYSCTL_NAME


def _sysctl(facts: HostFacts) -> tuple[PrepareStep | None, list[str]]:
    wrong = {k: facts.sysctl_persisted.get(k) for k in K8S_SYSCTLS}
    wrong = {k: s for k, s in wrong.items() if s is None or s.value != "1"}
    notes = []
    fixable = []
    for key, setting in wrong.items():
        if setting is not None and _applies_after_ours(setting.source):
            notes.append(f"{setting.source} sets {key} = {setting.value} and is applied after {SYSCTL_FILE}: "
                         f"change it there (kgpu leaves files it did not write alone)")
        else:
            fixable.append(key)
    ours = read_text(facts.root, SYSCTL_FILE) or ""
    fixable = [k for k in fixable if f"{k} = 1" not in ours.splitlines()]
    if not fixable:
        return None, notes
    change = _append_lines(facts.root, SYSCTL_FILE, [f"{k} = 1" for k in fixable],
                           "# Written by kgpu: kernel parameters Kubernetes networking needs.\n")
    then = ("sysctl --system",)
    return PrepareStep("k8s.sysctl", f"set {', '.join(fixable)} to 1 at boot", (change,), then), notes


def _swap(facts: HostFacts) -> PrepareStep | None:
    entries = [e for e in facts.fstab if e.is_active_swap]
    then = ("swapoff -a",) if facts.swaps else ()
    if not entries:
        return PrepareStep("k8s.swap", "turn swap off now (nothing in /etc/fstab)", (), then) if then else None
    old = read_text(facts.root, "/etc/fstab") or ""
    lines = old.splitlines(keepends=True)
    for e in entries:
        lines[e.line_no - 1] = "#" + lines[e.line_no - 1]
    change = FileChange.of(locate(facts.root, "/etc/fstab"), old, "".join(lines))
    where = ", ".join(f"line {e.line_no}" for e in entries)
    return PrepareStep("k8s.swap", f"comment out swap in /etc/fstab ({where})", (change,), then)


def _runtimes(facts: HostFacts) -> tuple[list[PrepareStep], list[str]]:
    steps: list[PrepareStep] = []
    notes: list[str] = []
    wanted = []
    if facts.containerd.installed and facts.containerd.config is not None and facts.containerd.config.nvidia is None:
        wanted.append("containerd")
    if facts.docker.installed and "nvidia" not in facts.docker.config.runtimes:
        wanted.append("docker")
    if facts.crio.installed and "nvidia" not in facts.crio.config.runtimes and not facts.crio.nvidia_hooks:
        wanted.append("crio")
    if not wanted:
        return steps, notes
    if "nvidia-container-runtime" not in facts.toolkit.binaries:
        notes.append(f"{', '.join(wanted)} not configured: install nvidia-container-toolkit first (see "
                     "runtime.toolkit); a runtime entry without its binary breaks every container that uses it")
        return steps, notes
    for name in wanted:
        plan: RuntimePlan = plan_configure(ConfigureRequest(runtime=name), facts.root)
        if plan.changed:
            then = (plan.restart_command,) if plan.restart_command else ()
            steps.append(PrepareStep(f"runtime.{name}", f"add the nvidia runtime to {name}",
                                     tuple(c for c in plan.changes if c.changed), then))
        notes.extend(plan.notes)
    return steps, notes


def find_driver_root(root: Path) -> str:
    """The first well-known driver root under ``root`` that holds NVML or libcuda (``/`` when none does)."""

    for candidate in WELL_KNOWN_DRIVER_ROOTS:
        base = locate(root, str(candidate)).real
        if find_library(base, NVML_SONAME) or find_library(base, CUDA_SONAME):
            return str(candidate)
    return "/"


def _cdi(facts: HostFacts, gpu: GpuFacts | None, driver_root: str | None) -> tuple[PrepareStep | None, list[str]]:
    """A CDI spec for the GPUs when the node has none (as ``kgpu cdi generate`` writes it)."""

    if any(s.kind == "nvidia.com/gpu" for s in facts.cdi_specs) or gpu is None:
        return None, []
    if gpu.inventory is None or not gpu.inventory.gpus:
        why = gpu.error or "no GPU in the inventory"
        return None, [f"no CDI spec written: the GPUs could not be listed ({why})"]
    chosen = driver_root or find_driver_root(facts.root)
    try:
        result = generate_spec(gpu.inventory, CdiOptions(root=facts.root, driver_root=chosen,
                                                         strategies=("index", "uuid")))
    except CdiError as exc:
        return None, [f"no CDI spec written: {exc}"]
    check = validate(result.spec.to_json(), facts.root)
    if not check.ok:
        return None, [f"no CDI spec written: the generated spec is invalid: {'; '.join(check.errors)}"]
    change = _change(facts.root, CDI_SPEC_FILE, render(result.spec, "yaml"))
    title = (f"write the CDI spec for {len(gpu.inventory.gpus)} GPU(s) and "
             f"{len(gpu.inventory.mig_devices)} MIG device(s) (driver root {chosen})")
    return PrepareStep("cdi.spec", title, (change,)), list(result.notes)


def plan_prepare(facts: HostFacts, gpu: GpuFacts | None = None, driver_root: str | None = None) -> PreparePlan:
    """The steps that would bring this node to what the doctor expects; none when it is already there.

    With ``gpu`` (the GPU inventory, or why it could not be read), a node without a CDI spec gets one,
    generated for ``driver_root`` (default: the first well-known driver root holding the driver).
    """
    steps: list[PrepareStep] = []
    notes: list[str] = []
    for planner in (_nouveau, _modules):
        step = planner(facts)
        if step:
            steps.append(step)
    sysctl_step, sysctl_notes = _sysctl(facts)
    notes += sysctl_notes
    if sysctl_step:
        steps.append(sysctl_step)
    swap_step = _swap(facts)
    if swap_step:
        steps.append(swap_step)
    runtime_steps, runtime_notes = _runtimes(facts)
    steps += runtime_steps
    notes += runtime_notes
    cdi_step, cdi_notes = _cdi(facts, gpu, driver_root)
    notes += cdi_notes
    if cdi_step:
        steps.append(cdi_step)
    return PreparePlan(tuple(steps), tuple(notes))


def apply_prepare(plan: PreparePlan) -> list[Applied]:
    """Write every step's files, all or none, each keeping ``.kgpu.bak`` (and the first time ``.kgpu.orig``)."""
    return apply_changes([c for step in plan.steps for c in step.changes])
