"""GPU shares on demand, on a real kubelet, API server and kube-scheduler: kgpu's chart with scheduler.enabled and
a config that shares the simulated node's 8 GPUs dynamically (HAMi's nvidia.com/gpumem and gpucores).

The lab pulls nothing, so kube-scheduler's image is built from the lab's own binary; its pods reach the API server
only from the host network, so the components that call it run there. The driver root node.py lays out has the
suite's stand-in for nvidia-cuda-mps-control, so kgpu mps-daemon runs its "daemons" and the shares are healthy.
Only on the newest lab (newest_only): what it checks is kgpu's own placement and Allocate answers; about 2 minutes
(the fixture's install and uninstall are half of it).
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from chart import NAMESPACE, Release, lab_values
from cluster import GPU, LAB, Cluster, wait_for
from conftest import record
from node import kgpu_files_left
from prometheus_client.parser import text_string_to_metric_families

from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.scheduler.assignment import decode
from kgpu.scheduler.inventory import decode_gpus
from kgpu.scheduler.names import DEVICES_ALLOCATED, LABEL_MEMORY, NODE_GPUS

pytestmark = pytest.mark.newest_only("the extender's placement and the device plugin's Allocate are kgpu's own; "
                                     "the module's 2 minutes are spent once")

TEST_NS = "kgpu-e2e-shares"
BUSYBOX = "local/busybox:1"
SHARES = 10
API = [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}, {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]
METRICS = "http://127.0.0.1:19395/metrics"
CHECKPOINT = Path("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
PRESENT = "nvidia.com/gpu.present"
PODS = 60
"""Pods created at once in the oversubscription test: 200 took the module past 4 minutes on the 2-core lab
(bench/scheduler.py schedules 200)."""


def kube_scheduler_image(cluster: Cluster) -> str:
    """``local/kube-scheduler:<version>`` from the lab's own binary (mkimage.py, imported into the lab)."""
    binary = cluster.kubeconfig.parent / "bin" / "kube-scheduler"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    reference = f"local/kube-scheduler:{version}"
    if subprocess.run(["crictl", "inspecti", reference], env=cluster.env, capture_output=True).returncode == 0:
        return version  # imported by an earlier run: the binary of this version is the same
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        (rootfs / "usr" / "local" / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        shutil.copy2(binary, rootfs / "usr" / "local" / "bin" / "kube-scheduler")
        archive = Path(tmp) / "kube-scheduler.tar"
        subprocess.run([sys.executable, str(LAB.parent / "images" / "mkimage.py"), str(rootfs),
                        reference, str(archive)], check=True, capture_output=True)
        cluster.import_image(archive)
    return version


def shares_values(kube_scheduler_tag: str) -> dict[str, Any]:
    config = {"version": "v1", "flags": {"plugin": {"deviceListStrategy": "driver-mounts"}},
              "sharing": {"mps": {"dynamic": {"shares": SHARES}}}}
    return lab_values(
        config=config,
        validation={"enabled": False},  # its pod asks for nvidia.com/gpu through the default scheduler
        devicePlugin={"hostNetwork": True, "env": API},
        mpsDaemon={**lab_values()["mpsDaemon"], "enabled": True},
        scheduler={
            "enabled": True, "hostNetwork": True, "env": API, "leaderElect": False,
            "kubeScheduler": {"image": {"repository": "local/kube-scheduler", "tag": kube_scheduler_tag,
                                        "pullPolicy": "Never"}, "securePort": 10369},
            "extender": {"httpBind": "127.0.0.1:18080", "metricsPort": 19395},
        },
    )


@pytest.fixture(scope="module")
def shares(cluster: Cluster, image: str, driver_root: Path) -> Iterator[Release]:
    """The chart with the second scheduler and dynamic shares on the simulated node, until every share counts.

    Leaves the node as it found it: the release uninstalled, no pods, the gpu.present label only if it was
    there, no nvidia.com/gpu count in the Node's status, no kgpu file on the node that was not there before."""
    if not cluster.on_lab:
        pytest.skip("builds kube-scheduler's image from the lab's binary; another cluster needs its own")
    # Given a node where nothing advertises GPUs (a kubelet keeps counting the devices of a plugin that went
    # away: it starts afresh, and a count left in the Node's status is dropped)
    if cluster.allocatable() > 0:
        cluster.restart_kubelet()
    cluster.forget_stale_resource(GPU)
    assert cluster.allocatable() == 0, f"something else advertises {GPU} on node {cluster.node}"
    # a device plugin killed before it could withdraw its GPUs left them: the extender must not see them yet
    cluster.kubectl("annotate", "node", cluster.node, f"{NODE_GPUS}-")
    had_present = PRESENT in cluster.node_labels()
    files_before = set(kgpu_files_left())
    tag = kube_scheduler_image(cluster)
    release = Release(cluster)
    started = time.monotonic()
    try:
        cluster.kubectl("label", "node", cluster.node, f"{PRESENT}=true", "--overwrite")
        release.install(shares_values(tag))
        try:
            wait_for(f"allocatable {SHARES * 8} GPU shares", lambda: cluster.allocatable() == SHARES * 8,
                     timeout=180)
            wait_for("the node's dynamic GPUs",
                     lambda: NODE_GPUS in cluster.node_object()["metadata"]["annotations"], timeout=60)
            wait_for("the extender ready", lambda: _get("http://127.0.0.1:19395/readyz") == "ok\n", timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster)}") from None
        record(f"v{cluster.version}: helm install → {SHARES * 8} GPU shares schedulable",
               f"{time.monotonic() - started:.1f} s")
        cluster.create_namespace(TEST_NS)
        yield release
    finally:
        cluster.delete_namespace(TEST_NS)
        with tempfile.TemporaryFile("w+") as stopping:  # what the node components said as they stopped
            followers = [subprocess.Popen(
                ["kubectl", "logs", "-f", "-n", NAMESPACE, "-l", f"app.kubernetes.io/component={component}",
                 "--tail", "0", "--prefix"], env=cluster.env, stdout=stopping, stderr=subprocess.STDOUT)
                for component in ("device-plugin", "mps-daemon")]
            try:
                if release.installed:
                    release.uninstall()
            finally:
                for follower in followers:
                    follower.terminate()
                    follower.wait()
            stopping.seek(0)
            last_words = f"the node components' last words:\n{stopping.read()[-4000:]}"
        if not had_present:
            cluster.kubectl("label", "node", cluster.node, f"{PRESENT}-", check=False)
        try:
            wait_for("the node's dynamic GPUs withdrawn", lambda: NODE_GPUS not in cluster.node_object()[
                "metadata"].get("annotations", {}), timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{last_words}") from None
        wait_for(f"allocatable {GPU} gone", lambda: cluster.allocatable() == 0, timeout=120)
        cluster.forget_vanished_resources([GPU])  # the kubelet keeps a gone plugin's 80 shares in the capacity
    left = sorted(set(kgpu_files_left()) - files_before)
    assert left == [], f"kgpu files left on the node after helm uninstall: {left}\n{last_words}"


def diagnose(cluster: Cluster) -> str:
    """What an admin would look at when the shares do not become schedulable."""
    parts = []
    for args in (("get", "pods", "-n", NAMESPACE, "-o", "wide"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=device-plugin", "--all-containers",
                  "--tail", "30"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=device-plugin", "--all-containers",
                  "--previous", "--tail", "30"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=mps-daemon", "--tail", "20"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=scheduler", "--all-containers",
                  "--tail", "30"),
                 ("get", "events", "-n", NAMESPACE, "--sort-by", ".lastTimestamp")):
        out = cluster.kubectl(*args, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{out[-4000:]}")
    return "\n".join(parts)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def share_pod(name: str, memory: int, *, cores: int | None = None, policy: str | None = None) -> dict[str, Any]:
    """A HAMi workload unchanged: one GPU share of ``memory`` MiB (and ``cores`` % of its SMs), through the
    chart's second scheduler; its container prints the MPS environment its Allocate response gave it."""
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


@contextmanager
def pods_removed_after(cluster: Cluster) -> Iterator[None]:
    """Every pod of the test namespace deleted when the test ends, placed or not, so the next test starts from
    GPUs with nothing allocated whatever happened in this one."""
    try:
        yield
    finally:
        cluster.kubectl("delete", "pods", "-n", TEST_NS, "--all", "--wait=true", timeout=300)


def allocated_gpu(cluster: Cluster, name: str) -> str | None:
    pod = cluster.get("pod", "-n", TEST_NS, name)
    if not pod["spec"].get("nodeName"):
        return None
    return decode(pod["metadata"]["annotations"][DEVICES_ALLOCATED]).shares[0].uuid


def container_env(cluster: Cluster, name: str) -> dict[str, str]:
    cluster.wait_pod_phase(TEST_NS, name, ("Running",))
    logs = wait_for(f"{name}'s environment", lambda: cluster.kubectl("logs", "-n", TEST_NS, name) or None)
    return dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)


def metric(name: str, **labels: str) -> float | None:
    """The extender's sample of ``name`` whose labels include ``labels``, None when it has none."""
    for family in text_string_to_metric_families(_get(METRICS)):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


@pytest.mark.parametrize(("policy", "gpus"), [("binpack", 1), ("spread", 3)])
def test_20_30_and_25_gb_pods_land_on_one_gpu_under_binpack_and_three_under_spread(
        shares: Release, cluster: Cluster, policy: str, gpus: int) -> None:
    sizes = {f"{policy}-{mib}": mib for mib in (20000, 30000, 25000)}
    with pods_removed_after(cluster):
        # Given three pods asking for 20000, 30000 and 25000 MiB of one GPU, with the policy annotated
        cluster.apply([share_pod(name, mib, policy=policy) for name, mib in sizes.items()])
        # When the chart's kube-scheduler has placed them through the extender
        used = {n: wait_for(f"{n} bound", lambda n=n: allocated_gpu(cluster, n)) for n in sizes}
        # Then binpack put them on one GPU, spread on three
        assert len(set(used.values())) == gpus, used
        # and each container runs as an MPS client of its GPU with exactly its share
        for name, mib in sizes.items():
            env = container_env(cluster, name)
            assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={mib}M"
            assert env["NVIDIA_VISIBLE_DEVICES"] in ("void", used[name])  # driver-mounts: the device node
            assert env["CUDA_MPS_PIPE_DIRECTORY"].endswith(f"/{used[name]}/pipe")
            labels = cluster.get("pod", "-n", TEST_NS, name)["metadata"]["labels"]
            assert labels[LABEL_MEMORY] == str(mib)
        # and the extender's metrics (HAMi's names) show what each GPU has given and each container got
        for uuid in set(used.values()):
            given = sum(mib for name, mib in sizes.items() if used[name] == uuid)
            wait_for(f"hami_gpu_memory_allocated_bytes of {uuid} = {given} MiB", lambda uuid=uuid, given=given:
                     metric("hami_gpu_memory_allocated_bytes", device_uuid=uuid) == given * 2**20, timeout=30)
        for name, mib in sizes.items():
            assert metric("hami_vgpu_memory_allocated_bytes", pod=name, device_uuid=used[name]) == mib * 2**20


def test_a_90000_mib_pod_stays_pending_with_the_largest_free_share(shares: Release, cluster: Cluster) -> None:
    with pods_removed_after(cluster):
        # Given a pod asking for more memory than any H100 has (80 GiB: 81559 MiB as NVML reports it)
        cluster.apply(share_pod("too-big", 90000))
        # Then it stays Pending, and its events say what the node could have given
        events = wait_for("the pod's scheduling events", lambda: [
            e for e in cluster.get("events", "-n", TEST_NS, "--field-selector", "involvedObject.name=too-big")["items"]
            if e["reason"] in ("FailedScheduling", "FilteringFailed")] or None, timeout=60)
        assert cluster.pod_phase(TEST_NS, "too-big") == "Pending"
        assert not cluster.get("pod", "-n", TEST_NS, "too-big")["spec"].get("nodeName")
        messages = " ".join(e["message"] for e in events)
        assert "90000 MiB" in messages and "largest free share: 81559 MiB and 100 percent of SMs" in messages
        assert "%!" not in messages  # kube-scheduler passes the reason through Go's fmt


def checkpoint_allocations(pod_uids: set[str]) -> dict[str, dict[str, str]]:
    """The kubelet's own record of each Allocate response for these pods: pod UID → the container's envs."""
    data = json.loads(CHECKPOINT.read_text())["Data"]
    out = {}
    for entry in data.get("PodDeviceEntries") or []:
        if entry["PodUID"] in pod_uids and entry["ResourceName"] == GPU:
            response = pb.ContainerAllocateResponse.FromString(base64.b64decode(entry["AllocResp"]))
            out[entry["PodUID"]] = dict(response.envs)
    return out


def test_many_pods_at_once_never_oversubscribe_a_gpu(shares: Release, cluster: Cluster) -> None:
    # Given PODS pods of different sizes created at once: more memory in all than the 8 GPUs have
    sizes = [(4000 + (i * 7919) % 28000, 5 + (i * 13) % 30) for i in range(PODS)]
    with pods_removed_after(cluster):
        started = time.monotonic()
        cluster.apply([share_pod(f"p{i:03d}", m, cores=c) for i, (m, c) in enumerate(sizes)])

        # When every one is bound or refused
        def settled() -> tuple[list[dict[str, Any]], int, float] | None:
            pods = cluster.get("pods", "-n", TEST_NS)["items"]
            refused = {e["involvedObject"]["name"] for e in cluster.get("events", "-n", TEST_NS)["items"]
                       if e["reason"] in ("FailedScheduling", "FilteringFailed")}
            bound = [p for p in pods if p["spec"].get("nodeName")]
            done = {p["metadata"]["name"] for p in bound} | refused
            return (bound, len(refused), time.monotonic() - started) if len(done) >= PODS else None
        bound, refused, seconds = wait_for(f"{PODS} pods bound or refused", settled, timeout=240, interval=1.0)
        record(f"v{cluster.version}: {PODS} GPU-share pods created at once",
               f"{len(bound)} bound, {refused} refused in {seconds:.1f} s")
        assert 0 < len(bound) < PODS  # some did not fit: the check below is not vacuous
        # Then no GPU is promised more memory, SMs or clients than it has, by the assignments ...
        gpus = {g.uuid: g for g in decode_gpus(cluster.node_object()["metadata"]["annotations"][NODE_GPUS])}
        totals: dict[str, list[int]] = {}
        for p in bound:
            for s in decode(p["metadata"]["annotations"][DEVICES_ALLOCATED]).shares:
                t = totals.setdefault(s.uuid, [0, 0, 0])
                t[0], t[1], t[2] = t[0] + s.memory_mib, t[1] + s.cores, t[2] + 1
        for uuid, (memory, cores, clients) in totals.items():
            assert memory <= gpus[uuid].memory_mib and cores <= 100 and clients <= SHARES, \
                (uuid, memory, cores, clients)
        # ... and by what the device plugin answered the kubelet (its checkpoint of the Allocate responses)
        uids = {p["metadata"]["uid"]: p for p in bound}

        def all_allocated() -> dict[str, dict[str, str]] | None:
            got = checkpoint_allocations(set(uids))
            return got if len(got) == len(uids) else None
        responses = wait_for("every bound pod allocated", all_allocated, timeout=180)
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
            assert memory <= gpus[uuid].memory_mib and cores <= 100, (uuid, memory, cores)
        failed = [p["metadata"]["name"] for p in cluster.get("pods", "-n", TEST_NS)["items"]
                  if p["status"].get("phase") == "Failed"]
        assert failed == [], f"pods the kubelet refused: {failed}"
