"""Runs the steps in order and stops at the first broken link.

Example::

    results = validate(ValidateOptions(root=Path("/")), open_backend)
    exit_code(results)  # 0 only when every step that ran passed
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.hostfacts import driver_file_mounts
from kgpu.deviceplugin.statefile import StateFileError, parse_state
from kgpu.errors import ConfigError, KgpuError
from kgpu.fsio import read_text
from kgpu.gpu.backend import BackendError
from kgpu.validate import host
from kgpu.validate.cuda import CudaDriver, CudaLibraryError, run_vector_add
from kgpu.validate.kube import (
    PodSpec,
    _api_error,
    judge_pod,
    local_addresses,
    node_allocatable,
    open_client,
    run_pod,
    this_node,
)
from kgpu.validate.result import STEP_NAMES, STEPS, StepResult, failed, not_run, passed, skipped

if TYPE_CHECKING:
    from kgpu.gpu.backend import GPUBackend
    from kgpu.gpu.model import Inventory
    from kgpu.validate.cuda import CudaDevice

IN_POD_STEPS = frozenset({"cuda"})
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def parse_skip(text: str | None) -> frozenset[str]:
    """``--skip runtime,6`` → {"runtime", "device-plugin"}; names or step numbers."""
    out: set[str] = set()
    for raw in (text or "").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item.isdigit() and 1 <= int(item) <= len(STEPS):
            out.add(STEPS[int(item) - 1].name)
        elif item in STEP_NAMES:
            out.add(item)
        else:
            raise ConfigError(
                f"--skip: unknown step {raw.strip()!r}; allowed: {', '.join(STEP_NAMES)} or 1-{len(STEPS)}"
            )
    return frozenset(out)


def parse_duration(text: str) -> float:
    """``120s``, ``2m``, ``90`` (seconds) → seconds."""
    value = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(value[-1:], 0.0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"--timeout: {text!r} is not a duration; use e.g. 120s, 2m or 90") from None
    if seconds <= 0:
        raise ConfigError(f"--timeout: {text!r} must be positive")
    return seconds


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    root: Path = Path("/")
    skip: frozenset[str] = frozenset()
    gpu: int | None = None
    pod: bool = False
    in_pod: bool = False
    kubeconfig: Path | None = None
    timeout_s: float = 120.0
    driver_root: Path | None = None
    cuda_library: Path | None = None
    node: str | None = None
    image: str = "kgpu:0.1.0"
    namespace: str = "default"
    runtime_class: str | None = None
    simulated: bool = False
    """The GPU backend is a fixture: there is no GPU to run CUDA on."""
    simulate: str | None = None
    """The fixture's name or path (``--simulate``), handed to the ``--pod`` pod so it skips CUDA too."""
    device_list_strategy: str | None = None
    """The device plugin's ``--device-list-strategy`` as given to validate (None: env, config file, or the
    plugin's state file say)."""
    config_file: Path | None = None
    """The device plugin's config file, for its device list strategy and driver root."""
    plugin_state_file: Path = Path("/run/kgpu/device-plugin/state.json")
    """The running device plugin's state file, as a path on the node (read under ``root``)."""
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def api_access(self) -> bool:
        return self.kubeconfig is not None or "KUBERNETES_SERVICE_HOST" in self.env

    @property
    def node_name(self) -> str | None:
        """The Node's name when given (--node, $NODE_NAME); None: ask the cluster which Node this is."""
        return self.node or self.env.get("NODE_NAME") or None

    @property
    def own_pod(self) -> tuple[str, str] | None:
        """(namespace, name) when running in a pod: its ServiceAccount namespace and $HOSTNAME."""
        if "KUBERNETES_SERVICE_HOST" not in self.env or not self.env.get("HOSTNAME"):
            return None
        try:
            namespace = Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
        except OSError:
            return None
        return (namespace, self.env["HOSTNAME"]) if namespace else None


class _Run:
    """One validation run: the steps share what earlier ones learned (the inventory)."""

    def __init__(self, opts: ValidateOptions, open_backend: Callable[[], GPUBackend]) -> None:
        self.opts = opts
        self.open_backend = open_backend
        self.inventory: Inventory | None = None
        self.backend_name = ""

    def driver(self) -> StepResult:
        return host.judge_driver(host.read_driver_facts(self.opts.root))

    def nvml(self) -> StepResult:

        try:
            backend = self.open_backend()
        except KgpuError as exc:
            return failed(
                "nvml",
                str(exc),
                "install the driver's user-space libraries (libnvidia-ml.so.1) or "
                "point --driver-root at them",
            )
        try:
            inventory = backend.inventory()
            self.backend_name = backend.name
            unhealthy = [g for g in inventory.gpus if not backend.probe(g.uuid)]
        except BackendError as exc:
            return failed(
                "nvml", str(exc), "run `nvidia-smi`; a GPU that does not answer needs a reset or a reboot"
            )
        finally:
            backend.close()
        if not inventory.gpus:
            return failed(
                "nvml",
                f"{backend.name}: NVML answers but sees no GPU",
                "check `lspci -d 10de:` and `dmesg | grep -i nvrm` for GPUs the driver did not claim",
            )
        if unhealthy:
            names = ", ".join(f"GPU {g.index} {g.uuid}" for g in unhealthy)
            return failed(
                "nvml",
                f"{names} does not answer (fallen off the bus or lost)",
                "see `nvidia-smi -q` and `dmesg` for XID 79/48; the GPU needs a reset or the node a reboot",
            )
        if backend.name == "nvml":
            kernel = host.kernel_driver_version(host.read_driver_facts(self.opts.root).version_text)
            if kernel and kernel != inventory.driver_version:
                return failed(
                    "nvml",
                    f"kernel module is {kernel} but libnvidia-ml is {inventory.driver_version}",
                    "driver/library version mismatch: reboot, or unload and reload the nvidia modules",
                )
        self.inventory = inventory
        gpus = "; ".join(f"{g.index}: {g.name} {g.uuid}" for g in inventory.gpus)
        return passed(
            "nvml",
            f"{len(inventory.gpus)} GPU(s) via {backend.name}, driver {inventory.driver_version}, "
            f"CUDA {inventory.cuda_driver_version}, all answer: {gpus}",
        )

    def device_nodes(self) -> StepResult:
        if self.inventory is not None:
            gpus = [g for g in self.inventory.gpus if self.opts.gpu is None or g.index == self.opts.gpu]
            minors = [g.minor for g in gpus]
        else:
            minors = sorted(
                int(p.name[6:]) for p in (self.opts.root / "dev").glob("nvidia[0-9]*") if p.name[6:].isdigit()
            )
        paths = host.required_device_nodes(minors)
        return host.judge_device_nodes([host.read_device_node(self.opts.root, p) for p in paths])

    def cuda(self) -> StepResult:

        if self.opts.simulated or self.backend_name == "simulated":
            return skipped("cuda", "no real GPU (simulated backend): the CUDA kernel was not run")
        try:
            driver = CudaDriver.load(self.opts.cuda_library, self.opts.driver_root)
        except CudaLibraryError as exc:
            return failed(
                "cuda",
                str(exc),
                "install the driver's libcuda.so.1 (in a container: run it with the "
                "NVIDIA runtime and NVIDIA_DRIVER_CAPABILITIES=compute,utility), or pass --driver-root DIR",
            )
        try:
            devices = driver.devices()
        except KgpuError as exc:
            return failed(
                "cuda",
                f"{driver.path}: {exc}",
                "CUDA cannot see a GPU: check CUDA_VISIBLE_DEVICES, "
                "/dev/nvidia-uvm, and that the driver and libcuda versions match",
            )
        if self.opts.gpu is not None:
            devices = self._select(devices, self.opts.gpu)
            if not devices:
                return failed(
                    "cuda",
                    f"--gpu {self.opts.gpu}: no such GPU visible to CUDA",
                    "use an index from `kgpu gpus` (nvidia-smi's numbering)",
                )
        if not devices:
            return failed(
                "cuda",
                f"{driver.path}: CUDA sees no device",
                "check CUDA_VISIBLE_DEVICES and the device nodes",
            )
        results = [run_vector_add(driver, d) for d in devices]
        lines = [r.line for r in results]
        detail = (
            f"libcuda {driver.path}, CUDA {driver.version // 1000}.{driver.version % 1000 // 10}; "
            + "; ".join(lines)
        )
        if all(r.passed for r in results):
            return passed("cuda", detail)
        return failed(
            "cuda",
            detail,
            "a kernel failed or computed wrong results on a GPU that NVML calls healthy: "
            "check `dmesg` for XIDs, then reset the GPU or drain the node",
        )

    def _select(self, devices: list[CudaDevice], index: int) -> list[CudaDevice]:
        """``--gpu N`` is nvidia-smi's index when NVML ran (matched by UUID), else the CUDA ordinal."""
        if self.inventory is not None:
            gpu = self.inventory.by_index(index)
            return [d for d in devices if gpu is not None and d.uuid == gpu.uuid]
        return [d for d in devices if d.ordinal == index]

    def runtime(self) -> StepResult:
        strategy, source, driver_root = self._plugin_strategy()
        if host.needs_nvidia_runtime(strategy):
            return host.judge_runtime(host.read_runtime_findings(self.opts.root))

        config = resolve_config({"device-list-strategy": ",".join(strategy), "nvidia-driver-root": driver_root},
                                host_root=self.opts.root)
        mounts = tuple(m.container_path for m in driver_file_mounts(config.driver_root))
        return host.judge_driver_mounts(host.read_runtime_installs(self.opts.root), mounts, driver_root, source)

    def _plugin_strategy(self) -> tuple[tuple[str, ...], str, str]:
        """How the device plugin hands GPUs to containers, where that was learnt, and its driver root.

        Given to validate (flag, DEVICE_LIST_STRATEGY, a config file) it is resolved as the plugin resolves
        it; otherwise the running plugin's state file records it; otherwise NVIDIA's default, envvar.
        """

        env = self.opts.env
        config_file = self.opts.config_file or (Path(env["CONFIG_FILE"]) if env.get("CONFIG_FILE") else None)
        if self.opts.device_list_strategy or env.get("DEVICE_LIST_STRATEGY") or config_file:
            config = resolve_config({"device-list-strategy": self.opts.device_list_strategy}, env, config_file)
            source = ("--device-list-strategy" if self.opts.device_list_strategy
                      else "DEVICE_LIST_STRATEGY" if env.get("DEVICE_LIST_STRATEGY") else f"config file {config_file}")
            return tuple(config.flags.plugin.device_list_strategy), source, config.flags.nvidia_driver_root or "/"

        path = self.opts.root / str(self.opts.plugin_state_file).lstrip("/")
        try:
            state = parse_state(read_text(path), str(self.opts.plugin_state_file))
        except (OSError, KgpuError, StateFileError):
            state = None
        if state is not None and state.device_list_strategy:
            return (state.device_list_strategy, f"the device plugin's state file {self.opts.plugin_state_file}",
                    state.nvidia_driver_root or "/")
        return ("envvar",), "NVIDIA's default", "/"

    def device_plugin(self) -> StepResult:
        facts = host.read_plugin_facts(self.opts.root)
        if not facts.kubelet_socket or not facts.plugin_sockets:
            return host.judge_plugin(facts, None, "")
        if not self.opts.api_access:
            return host.judge_plugin(
                facts, None, "allocatable not checked (no API access; pass --kubeconfig)"
            )

        name, how = self.opts.node_name, "--node" if self.opts.node else "$NODE_NAME"
        try:
            client = open_client(self.opts.kubeconfig)
            if name is None:
                name, how = this_node(client, socket.gethostname(), local_addresses(), self.opts.own_pod)
            allocatable = node_allocatable(client, name)
        except LookupError as exc:
            return failed("device-plugin", f"which Node is this machine? {exc}", "pass --node NAME (or set NODE_NAME)")
        except Exception as exc:  # any API or config failure is this step's finding, not a crash
            return failed(
                "device-plugin",
                f"reading node {name or '(this machine)'}: {_api_error(exc)}",
                "pass --node NAME (or set NODE_NAME) and check --kubeconfig / RBAC get and list on nodes",
            )
        result = host.judge_plugin(facts, allocatable, "")
        return replace(result, detail=f"{result.detail} (node {name}: {how})")

    def pod(self) -> StepResult:

        spec = PodSpec(self.opts.image, self.opts.namespace, self.opts.node, self.opts.runtime_class,
                       simulate=(self.opts.simulate or "h100x8") if self.opts.simulated else None)
        try:
            client = open_client(self.opts.kubeconfig, self.opts.namespace)
        except Exception as exc:  # lightkube raises ConfigError and OSError for a missing/broken kubeconfig
            return failed(
                "pod",
                f"no Kubernetes API access: {exc}",
                "pass --kubeconfig PATH, or run inside the cluster with a ServiceAccount",
            )
        return judge_pod(run_pod(client, spec, self.opts.timeout_s), self.opts.timeout_s)


def validate(
    opts: ValidateOptions,
    open_backend: Callable[[], GPUBackend],
    on_result: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Every step's result, in order; after the first failure the rest are ``not-run``."""
    run = _Run(opts, open_backend)
    results: list[StepResult] = []
    broken: StepResult | None = None
    for step in STEPS:
        if opts.in_pod and step.name not in IN_POD_STEPS:
            result = skipped(step.name, "--in-pod runs only the CUDA step")
        elif broken is not None:
            result = not_run(step.name, f"step {broken.step} ({broken.name}) failed")
        elif step.name in opts.skip:
            result = skipped(step.name, "--skip")
        elif step.name == "pod" and not opts.pod:
            result = skipped(step.name, "pass --pod to run a GPU pod through the cluster")
        else:
            result = getattr(run, step.name.replace("-", "_"))()
            if not result.ok:
                broken = result
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
