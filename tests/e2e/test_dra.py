"""kgpu's DRA driver in the real v1.36 cluster of ../shared/lab, on a simulated 8x H100 node.

The plugin runs on the host as root (no image needed), registered with the lab's real kubelet, its
ResourceSlice read by the real scheduler, its CDI specs applied by the lab's containerd. In order:

1. a pod whose ResourceClaimTemplate selects ``productName`` runs, its container seeing the claimed GPU's
   NVIDIA_VISIBLE_DEVICES through CDI;
2. two pods with memory shares of one H100 80GB (30Gi with 25 % of the SMs, 40Gi with 50 %, in NVIDIA's
   GpuConfig) run side by side, each with its MPS limits in its environment;
3. a third share of 20Gi, which does not fit in what is left (79.6 GiB in all), stays Pending with the
   scheduler's reason;
4. the plugin restarted between prepare and unprepare: the pods run on, their deletion unprepares the
   claims, and no CDI spec, checkpoint entry or MPS daemon is left;
5. a fatal XID takes the GPU out of the ResourceSlice.

Part of ``make e2e`` (tests/e2e/run.py, on the lab's v1.36; skipped on v1.28, which has no resource.k8s.io/v1,
and on a cluster other than the lab, whose node this process is not); ``make e2e-dra`` runs this module alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
NODE = "lab-node"
DRIVER = "gpu.nvidia.com"
NAMESPACE = "kgpu-e2e-dra"
KUBELET = Path("/var/lib/kubelet")
CDI_ROOT = Path("/var/run/cdi")
PRODUCT = "NVIDIA H100 80GB HBM3"
FAKE_MPS = REPO / "tests" / "fakes" / "nvidia-cuda-mps-control"
T = TypeVar("T")
ENV: dict[str, str] = {}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")
        time.sleep(0.25)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=ENV, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def get(kind: str, name: str = "", namespace: str | None = NAMESPACE) -> Any:
    args = ["get", kind, *([name] if name else []), "-o", "json"]
    return json.loads(kubectl(*args, *(["-n", namespace] if namespace else [])))


def apply(docs: list[dict[str, Any]]) -> None:
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


class Plugin:
    """``kgpu dra-plugin`` on the host, for the lab's node; start, SIGTERM, start again."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.events = work / "events.jsonl"
        self.events.touch()
        self.mps_root = work / "mps"
        self.log = work / "plugin.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "--simulate-events", str(self.events),
               "dra-plugin", "--node-name", NODE, "--kubeconfig", ENV["KUBECONFIG"], "--cdi-root", str(CDI_ROOT),
               "--mps-root", str(self.mps_root), "--mps-shm-dir", "/dev/shm", "--mps-control-binary", str(FAKE_MPS),
               "--device-plugin-state-file", str(self.work / "no-device-plugin.json")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
        wait_for("the kubelet to register the plugin",
                 lambda: self.alive() and (KUBELET / "plugins_registry" / f"{DRIVER}-reg.sock").is_socket()
                 and "registered with the kubelet" in self.log.read_text().split("DRA driver starting")[-1])

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"kgpu dra-plugin exited:\n{self.log.read_text()[-3000:]}")
        return True

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc = None


def slice_devices() -> dict[str, Any]:
    slices = get("resourceslices", namespace=None)["items"]
    return {d["name"]: d for s in slices if s["spec"]["driver"] == DRIVER and s["spec"].get("nodeName") == NODE
            for d in s["spec"].get("devices", [])}


def template(name: str, selector: str, memory: str | None = None, percent: int | None = None) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": DRIVER, "selectors": [{"cel": {"expression": selector}}]}
    if memory:
        exactly["capacity"] = {"requests": {"memory": memory}}
    spec: dict[str, Any] = {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}
    if percent is not None:
        spec["devices"]["config"] = [{"requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": {
            "apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
            "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": percent}}}}}]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"spec": spec}}


def pod(name: str, claim_template: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": claim_template}],
        "containers": [{"name": "c", "image": "local/busybox:1", "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "env | grep -E '^(NVIDIA_VISIBLE_DEVICES|CUDA_MPS_)' | sort; "
                                                "sleep 3600"],
                        "resources": {"claims": [{"name": "gpu"}]}}]}}


def logs_env(name: str) -> dict[str, str]:
    text = wait_for(f"the environment printed by {name}", lambda: kubectl("logs", "-n", NAMESPACE, name))
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def running(name: str) -> bool:
    return bool(get("pod", name)["status"].get("phase") == "Running")


def allocated_device(pod_name: str) -> dict[str, Any]:
    status = get("pod", pod_name)["status"]
    claim = status["resourceClaimStatuses"][0]["resourceClaimName"]
    return dict(get("resourceclaim", claim)["status"]["allocation"]["devices"]["results"][0])


@pytest.fixture(scope="module")
def plugin(cluster: Cluster) -> Iterator[Plugin]:
    if not cluster.on_lab:
        pytest.skip("the DRA plugin runs on the lab's node as a host process; another cluster's node is not here")
    if tuple(int(x) for x in cluster.version.lstrip("v").split(".")[:2]) < (1, 34):
        pytest.skip(f"Kubernetes {cluster.version} does not serve resource.k8s.io/v1")
    if os.geteuid() != 0:
        pytest.skip("the DRA plugin serves the kubelet's sockets: run as root")
    global NODE
    NODE = cluster.node
    ENV.update(cluster.env)
    work = Path(tempfile.mkdtemp(prefix="kgpu-e2e-dra-", dir="/tmp"))
    p = Plugin(work)
    kubectl("create", "namespace", NAMESPACE)
    apply([{"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DRIVER}, "spec": {
        "selectors": [{"cel": {"expression":
                               f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'gpu'"}}]}}])
    try:
        p.start()
        yield p
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=60s", check=False)
        if p.proc is not None:
            p.stop()
        kubectl("delete", "deviceclass", DRIVER, check=False)
        for s in get("resourceslices", namespace=None)["items"]:
            if s["spec"]["driver"] == DRIVER:
                kubectl("delete", "resourceslice", s["metadata"]["name"], check=False)
        for pid_file in p.mps_root.glob("*/pipe/nvidia-cuda-mps-control.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        shutil.rmtree(KUBELET / "plugins" / DRIVER, ignore_errors=True)
        for spec in CDI_ROOT.glob(f"k8s.{DRIVER}-claim_*"):
            spec.unlink()
        print(f"\nkgpu dra-plugin log: {p.log}", file=sys.stderr)


def test_a_pod_selecting_the_product_name_runs_with_its_gpu_through_cdi(plugin: Plugin) -> None:
    # Given the driver's slice with the node's eight GPUs
    devices = wait_for("the ResourceSlice with eight GPUs", lambda: (d := slice_devices()) and len(d) == 8 and d)
    assert devices["gpu-0"]["attributes"]["productName"] == {"string": PRODUCT}
    # when a pod's claim template selects the product by name
    apply([template("h100", f"device.attributes['{DRIVER}'].productName == '{PRODUCT}'"), pod("whole", "h100")])
    wait_for("pod whole running", lambda: running("whole"))
    # then its container has the allocated GPU's NVIDIA_VISIBLE_DEVICES, set by the claim's CDI spec
    device = allocated_device("whole")
    uuid = devices[device["device"]]["attributes"]["uuid"]["string"]
    assert logs_env("whole")["NVIDIA_VISIBLE_DEVICES"] == uuid
    assert len(list(CDI_ROOT.glob(f"k8s.{DRIVER}-claim_*.json"))) == 1
    kubectl("delete", "pod", "-n", NAMESPACE, "whole", "--wait=true")
    wait_for("the claim's CDI spec removed", lambda: not list(CDI_ROOT.glob(f"k8s.{DRIVER}-claim_*.json")))


def test_two_memory_shares_of_one_gpu_run_side_by_side_each_with_its_mps_limits(plugin: Plugin) -> None:
    gpu7 = slice_devices()["gpu-7"]["attributes"]["uuid"]["string"]
    on_gpu7 = f"device.attributes['{DRIVER}'].uuid == '{gpu7}'"
    apply([template("share-30", on_gpu7, "30Gi", 25), template("share-40", on_gpu7, "40Gi", 50),
           pod("small", "share-30"), pod("large", "share-40")])
    wait_for("both shares running", lambda: running("small") and running("large"))
    assert allocated_device("small")["device"] == allocated_device("large")["device"] == "gpu-7"
    assert allocated_device("small")["consumedCapacity"] == {"memory": "30Gi"}
    small, large = logs_env("small"), logs_env("large")
    assert (small["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], small["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]) == ("0=30720M", "25")
    assert (large["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], large["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]) == ("0=40960M", "50")
    assert small["CUDA_MPS_PIPE_DIRECTORY"] == large["CUDA_MPS_PIPE_DIRECTORY"] == str(plugin.mps_root / gpu7 / "pipe")
    assert small["NVIDIA_VISIBLE_DEVICES"] == gpu7
    # one MPS control daemon serves the GPU's clients
    assert (plugin.mps_root / gpu7 / "pipe" / "nvidia-cuda-mps-control.pid").exists()


def test_a_share_that_does_not_fit_stays_pending_with_the_schedulers_reason(plugin: Plugin) -> None:
    gpu7 = slice_devices()["gpu-7"]["attributes"]["uuid"]["string"]
    apply([template("share-20", f"device.attributes['{DRIVER}'].uuid == '{gpu7}'", "20Gi"),
           pod("toolarge", "share-20")])

    def unschedulable() -> str | None:
        for c in get("pod", "toolarge")["status"].get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                return str(c["message"])
        return None

    message = wait_for("the scheduler's reason", unschedulable)
    assert "cannot allocate all claims" in message, message
    assert get("pod", "toolarge")["status"]["phase"] == "Pending"
    kubectl("delete", "pod", "-n", NAMESPACE, "toolarge", "--wait=true")


def test_a_plugin_restart_between_prepare_and_unprepare_leaks_nothing(plugin: Plugin) -> None:
    gpu7 = slice_devices()["gpu-7"]["attributes"]["uuid"]["string"]
    pid_file = plugin.mps_root / gpu7 / "pipe" / "nvidia-cuda-mps-control.pid"
    daemon = int(pid_file.read_text())
    checkpoint = KUBELET / "plugins" / DRIVER / "kgpu-checkpoint.json"
    assert len(json.loads(checkpoint.read_text())["claims"]) == 2
    # when the plugin is stopped and started again while both shares run
    assert plugin.stop() == 0
    plugin.start()
    assert int(pid_file.read_text()) == daemon  # adopted, not restarted: its clients keep their server
    # then deleting the pods unprepares their claims through the new plugin, and nothing is left behind
    kubectl("delete", "pod", "-n", NAMESPACE, "small", "large", "--wait=true", "--timeout=60s")
    wait_for("both claims unprepared", lambda: json.loads(checkpoint.read_text())["claims"] == {})
    assert not list(CDI_ROOT.glob(f"k8s.{DRIVER}-claim_*.json"))
    wait_for("the MPS daemon quit with its last client", lambda: not pid_file.exists() or not _alive(daemon))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_fatal_xid_takes_the_gpu_out_of_the_slice(plugin: Plugin) -> None:
    devices = wait_for("eight GPUs published", lambda: (d := slice_devices()) and len(d) == 8 and d)
    uuid = devices["gpu-3"]["attributes"]["uuid"]["string"]
    with plugin.events.open("a") as f:
        f.write(json.dumps({"uuid": uuid, "kind": "xid", "xid": 79}) + "\n")
    remaining = wait_for("gpu-3 gone from the slice", lambda: (d := slice_devices()) and "gpu-3" not in d and d)
    assert sorted(remaining) == [f"gpu-{i}" for i in (0, 1, 2, 4, 5, 6, 7)]
