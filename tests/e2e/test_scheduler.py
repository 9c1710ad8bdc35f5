"""GPU shares on demand, on a real kubelet, API server and kube-scheduler: kgpu's chart with scheduler.enabled and
a config that shares the simulated node's 8 GPUs dynamically (HAMi's nvidia.com/gpumem and gpucores).

The lab pulls nothing, so kube-scheduler's image is built from the lab's own binary; its pods reach the API server
only from the host network, so the components that call it run there. The node's driver root gets the test suite's
stand-in for nvidia-cuda-mps-control (tests/fakes), so kgpu mps-daemon runs its "daemons" and the shares are healthy.
v1.36 only: the dynamic device plugin and the extender are the same on v1.28, but this module's setup (images,
host-network scheduler beside the lab's own) was made for the default lab.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart import Release, lab_values
from cluster import GPU, LAB, REPO, Cluster, wait_for
from conftest import record
from node import DRIVER_ROOT

from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.scheduler.assignment import decode
from kgpu.scheduler.inventory import decode_gpus
from kgpu.scheduler.names import DEVICES_ALLOCATED, NODE_GPUS

TEST_NS = "kgpu-e2e-shares"
BUSYBOX = "local/busybox:1"
SHARES = 10
API = [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}, {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]
METRICS = "http://127.0.0.1:19395/metrics"
CHECKPOINT = Path("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
MPS_FAKE = REPO / "tests" / "fakes" / "nvidia-cuda-mps-control"


def kube_scheduler_image(cluster: Cluster) -> str:
    """``local/kube-scheduler:<version>`` from the lab's own binary (mkimage.py, imported into the lab)."""
    binary = cluster.kubeconfig.parent / "bin" / "kube-scheduler"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        (rootfs / "usr" / "local" / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        shutil.copy2(binary, rootfs / "usr" / "local" / "bin" / "kube-scheduler")
        archive = Path(tmp) / "kube-scheduler.tar"
        subprocess.run([sys.executable, str(LAB.parent / "images" / "mkimage.py"), str(rootfs),
                        f"local/kube-scheduler:{version}", str(archive)], check=True, capture_output=True)
        cluster.import_image(archive)
    return version


def shares_values(kube_scheduler_tag: str) -> dict[str, Any]:
    config = {"version": "v1", "flags": {"plugin": {"deviceListStrategy": "driver-mounts"}},
              "sharing": {"mps": {"dynamic": {"shares": SHARES}}}}
    return lab_values(
        config=config,
        validation={"enabled": False},  # its pod asks for nvidia.com/gpu through the default scheduler
        devicePlugin={"hostNetwork": True, "env": API},
        mpsDaemon={"enabled": True},
        scheduler={
            "enabled": True, "hostNetwork": True, "env": API, "leaderElect": False,
            "kubeScheduler": {"image": {"repository": "local/kube-scheduler", "tag": kube_scheduler_tag,
                                        "pullPolicy": "Never"}, "securePort": 10369},
            "extender": {"httpBind": "127.0.0.1:18080", "metricsPort": 19395},
        },
    )


@pytest.fixture(scope="module")
def shares(cluster: Cluster, image: str, driver_root: Path) -> Iterator[Release]:
    if not cluster.on_lab or not cluster.version.lstrip("v").startswith("1.36"):
        pytest.skip("made for the default lab (v1.36)")
    real_mps = DRIVER_ROOT / "bin" / "nvidia-cuda-mps-control"
    shutil.copy2(MPS_FAKE, real_mps)
    release = Release(cluster)
    tag = kube_scheduler_image(cluster)
    started = time.monotonic()
    release.install(shares_values(tag))
    try:
        wait_for(f"allocatable {SHARES * 8} GPU shares", lambda: cluster.allocatable() == SHARES * 8, timeout=180)
        wait_for("the node's dynamic GPUs", lambda: NODE_GPUS in cluster.node_object()["metadata"]["annotations"],
                 timeout=60)
        wait_for("the extender ready", lambda: _get("http://127.0.0.1:19395/readyz") == "ok\n", timeout=120)
        record("helm install to GPU shares schedulable", f"{time.monotonic() - started:.1f} s")
        cluster.create_namespace(TEST_NS)
        yield release
    finally:
        cluster.delete_namespace(TEST_NS)
        release.uninstall()
        wait_for("the node's dynamic GPUs withdrawn",
                 lambda: NODE_GPUS not in cluster.node_object()["metadata"].get("annotations", {}), timeout=120)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def share_pod(name: str, memory: int, *, cores: int | None = None, policy: str | None = None) -> dict[str, Any]:
    limits: dict[str, Any] = {GPU: 1, "nvidia.com/gpumem": memory}
    if cores is not None:
        limits["nvidia.com/gpucores"] = cores
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": TEST_NS,
                     "annotations": {"hami.io/gpu-scheduler-policy": policy} if policy else {}},
        "spec": {
            "schedulerName": "kgpu-scheduler", "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "env | grep -E '^(CUDA_MPS|NVIDIA_VISIBLE)' | sort; sleep 3600"],
                            "resources": {"limits": limits}}],
        },
    }


def allocated_gpu(cluster: Cluster, name: str) -> str:
    annotations = cluster.get("pod", "-n", TEST_NS, name)["metadata"]["annotations"]
    return decode(annotations[DEVICES_ALLOCATED]).shares[0].uuid


def container_env(cluster: Cluster, name: str) -> dict[str, str]:
    cluster.wait_pod_phase(TEST_NS, name, ("Running",))
    logs = wait_for(f"{name}'s environment", lambda: cluster.kubectl("logs", "-n", TEST_NS, name) or None)
    return dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)


@pytest.mark.parametrize(("policy", "gpus"), [("binpack", 1), ("spread", 3)])
def test_20_30_and_25_gb_pods_land_on_one_gpu_under_binpack_and_three_under_spread(
        shares: Release, cluster: Cluster, policy: str, gpus: int) -> None:
    names = [f"{policy}-{mib}" for mib in (20000, 30000, 25000)]
    for name, mib in zip(names, (20000, 30000, 25000), strict=True):
        cluster.apply(share_pod(name, mib, policy=policy))
    used = [wait_for(f"{n} bound", lambda n=n: allocated_gpu(cluster, n) if cluster.get(
        "pod", "-n", TEST_NS, n)["spec"].get("nodeName") else None) for n in names]
    assert len(set(used)) == gpus
    # the container runs as an MPS client of that GPU with exactly its share
    for name, mib, uuid in zip(names, (20000, 30000, 25000), used, strict=True):
        env = container_env(cluster, name)
        assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={mib}M"
        assert env["NVIDIA_VISIBLE_DEVICES"] in ("void", uuid)  # driver-mounts: the device node, not the toolkit
        assert env["CUDA_MPS_PIPE_DIRECTORY"].endswith(f"/{uuid}/pipe")
    if policy == "binpack":
        metric = f'device_uuid="{used[0]}",node="lab-node",zone="vGPU"}} {75000 * 2**20:.6e}'
        wait_for("the extender's metric of the GPU", lambda: any(
            line.startswith("hami_gpu_memory_allocated_bytes") and line.endswith(metric.split("} ")[1])
            and used[0] in line for line in _get(METRICS).splitlines()), timeout=30)
    cluster.kubectl("delete", "pod", "-n", TEST_NS, *names, "--wait=true")


def test_a_90000_mib_pod_stays_pending_with_the_largest_free_share(shares: Release, cluster: Cluster) -> None:
    cluster.apply(share_pod("too-big", 90000))
    events = wait_for("the pod's scheduling events", lambda: [
        e for e in cluster.get("events", "-n", TEST_NS, "--field-selector", "involvedObject.name=too-big")["items"]
        if e["reason"] in ("FailedScheduling", "FilteringFailed")] or None, timeout=60)
    assert cluster.pod_phase(TEST_NS, "too-big") == "Pending"
    messages = " ".join(e["message"] for e in events)
    assert "90000 MiB" in messages and "largest free share: 81559 MiB and 100 percent of SMs" in messages
    assert "%!" not in messages
    cluster.kubectl("delete", "pod", "-n", TEST_NS, "too-big", "--wait=true")


def checkpoint_allocations(pod_uids: set[str]) -> dict[str, dict[str, str]]:
    """The kubelet's own record of each Allocate response for these pods: pod UID → the container's envs."""
    data = json.loads(CHECKPOINT.read_text())["Data"]
    out = {}
    for entry in data.get("PodDeviceEntries") or []:
        if entry["PodUID"] in pod_uids and entry["ResourceName"] == GPU:
            response = pb.ContainerAllocateResponse.FromString(base64.b64decode(entry["AllocResp"]))
            out[entry["PodUID"]] = dict(response.envs)
    return out


def test_200_pods_at_once_never_oversubscribe_a_gpu(shares: Release, cluster: Cluster) -> None:
    # Given 200 pods of different sizes created at once
    sizes = [(4000 + (i * 7919) % 28000, 5 + (i * 13) % 30) for i in range(200)]
    started = time.monotonic()
    cluster.apply([share_pod(f"p{i:03d}", m, cores=c) for i, (m, c) in enumerate(sizes)])
    # When every one is bound or refused
    def settled() -> tuple[list[dict[str, Any]], float] | None:
        pods = cluster.get("pods", "-n", TEST_NS)["items"]
        refused = {e["involvedObject"]["name"] for e in cluster.get("events", "-n", TEST_NS)["items"]
                   if e["reason"] in ("FailedScheduling", "FilteringFailed")}
        bound = [p for p in pods if p["spec"].get("nodeName")]
        done = {p["metadata"]["name"] for p in bound} | refused
        return (bound, time.monotonic() - started) if len(done) >= 200 else None
    bound, seconds = wait_for("200 pods bound or refused", settled, timeout=240, interval=1.0)
    record("200 GPU-share pods created at once: bound", f"{len(bound)} in {seconds:.1f} s "
                                                         f"({len(bound) / seconds:.1f} pods/s)")
    # Then no GPU is promised more memory, SMs or clients than it has, by the assignments ...
    gpus = {g.uuid: g for g in decode_gpus(cluster.node_object()["metadata"]["annotations"][NODE_GPUS])}
    totals: dict[str, list[int]] = {}
    failed = [p["metadata"]["name"] for p in bound if p["status"].get("phase") == "Failed"]
    assert failed == [], f"pods the kubelet refused: {failed}"
    for p in bound:
        for s in decode(p["metadata"]["annotations"][DEVICES_ALLOCATED]).shares:
            t = totals.setdefault(s.uuid, [0, 0, 0])
            t[0], t[1], t[2] = t[0] + s.memory_mib, t[1] + s.cores, t[2] + 1
    for uuid, (memory, cores, clients) in totals.items():
        assert memory <= gpus[uuid].memory_mib and cores <= 100 and clients <= SHARES, (uuid, memory, cores, clients)
    # ... and by what the device plugin answered the kubelet (its own checkpoint of the Allocate responses)
    uids = {p["metadata"]["uid"]: p for p in bound}

    def all_allocated() -> dict[str, dict[str, str]] | None:
        got = checkpoint_allocations(set(uids))
        return got if len(got) == len(uids) else None
    responses = wait_for("every bound pod allocated", all_allocated, timeout=120)
    answered: dict[str, list[int]] = {}
    for uid, envs in responses.items():
        share = decode(uids[uid]["metadata"]["annotations"][DEVICES_ALLOCATED]).shares[0]
        assert envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={share.memory_mib}M"
        assert envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == str(share.cores)
        gpu = envs["CUDA_MPS_PIPE_DIRECTORY"].split("/")[-2]
        assert gpu == share.uuid
        a = answered.setdefault(gpu, [0, 0])
        a[0], a[1] = a[0] + share.memory_mib, a[1] + share.cores
    for uuid, (memory, cores) in answered.items():
        assert memory <= gpus[uuid].memory_mib and cores <= 100
    cluster.kubectl("delete", "pods", "-n", TEST_NS, "--all", "--wait=false")
