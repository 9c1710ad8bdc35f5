"""An admin's install, on a real kubelet and API server: `helm install` of kgpu's chart with kgpu's own image,
the toolkit-free way (driver root + driver-mounts), on a simulated 8×H100 node; then what an admin checks,
a failing GPU, a kubelet restart, reconfiguration, and `helm uninstall`.

The tests run in file order against one release (the module's ``release`` fixture): each leaves the node as
it found it (8 healthy GPUs, the 2-GPU pod running) for the next.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import readme
from chart import NAMESPACE, SELECTOR, Release, follows, lab_values, pod_identities
from cluster import GPU, REPO, Cluster, wait_for
from conftest import record
from node import CONTROL_NODES, DRIVER_ROOT, inject_event, kgpu_files_left, simulated_gpus

from kgpu.exporter.podresources import PodResourcesClient

TEST_NS = "kgpu-e2e"
POD = "two-gpus"
PRESENT = "nvidia.com/gpu.present"
BUSYBOX = "local/busybox:1"  # imported by the lab
INSTALL = "Install on a cluster"
"""The README section whose commands the module runs as written (make image, lab up and import: make e2e's own)."""


@dataclass
class Installed:
    release: Release
    cluster: Cluster
    install_s: float = 0.0
    validation_log: list[str] = field(default_factory=list)
    before: tuple[set[str], set[str]] = (set(), set())
    """nvidia.com/* labels and kgpu node files there before the install (left by other users of the
    cluster): helm uninstall must take away what the release added, not what it found."""


def gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": TEST_NS},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "cuda", "image": BUSYBOX, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "sleep 3600"],
                "resources": {"limits": {GPU: gpus}},
            }],
        },
    }


def _follow_validation_logs(cluster: Cluster, into: list[str], done: threading.Event) -> None:
    """Stream the post-install validation Job's log before Helm deletes the Job (hook-succeeded)."""
    selector = "app.kubernetes.io/component=validation"
    while not done.is_set():
        pods = cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
        running = [p for p in pods if p["status"].get("phase") in ("Running", "Succeeded", "Failed")]
        if running:
            name = running[0]["metadata"]["name"]
            out = subprocess.run(["kubectl", "logs", "-f", "-n", NAMESPACE, name], env=cluster.env,
                                 capture_output=True, text=True, timeout=600)
            into.extend(out.stdout.splitlines())
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def installed(cluster: Cluster, image: str, driver_root: Path) -> Iterator[Installed]:
    """`helm install` with lab-values.yaml, timed from its start to allocatable > 0 and to a GPU pod Running."""
    # Given a node where nothing advertises GPUs, or the timings would start from GPUs that are not there:
    # a kubelet keeps counting the devices of a plugin that went away for minutes (earlier users of the lab
    # run device plugins), so such a kubelet starts afresh, and a count left in the Node's status is dropped.
    if cluster.on_lab and cluster.allocatable() > 0:
        cluster.restart_kubelet()
    cluster.forget_stale_resource(GPU)
    assert cluster.allocatable() == 0, f"something else advertises {GPU} on node {cluster.node}"
    found = ({k for k in cluster.node_labels() if k.startswith("nvidia.com/")} - {PRESENT}, set(kgpu_files_left()))
    # The README's label and install, as written (its node name is the lab's; the driver root: the fixture's)
    readme.run(cluster, readme.command(INSTALL, "kubectl label node"), image)
    cluster.create_namespace(TEST_NS)
    release = Release(cluster)
    state = Installed(release, cluster, before=found)
    failure: list[BaseException] = []
    finished = threading.Event()

    def install() -> None:
        try:
            readme.helm(cluster, readme.command(INSTALL, "helm install kgpu deploy/helm/kgpu -n kube-system -f"),
                        release=release)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        finally:
            finished.set()

    try:
        start = time.monotonic()
        now = time.time()
        record(f"v{cluster.version}: helm install started at", time.strftime("%H:%M:%S", time.localtime(now))
               + f".{int(now % 1 * 1000):03d}")
        threading.Thread(target=install, daemon=True).start()
        logs = threading.Thread(target=_follow_validation_logs, args=(cluster, state.validation_log, finished),
                                daemon=True)
        logs.start()
        cluster.apply(gpu_pod(POD, 2))  # what an admin's first GPU workload does: wait for GPUs
        wait_for("allocatable nvidia.com/gpu > 0", lambda: cluster.allocatable() > 0 or bool(failure), timeout=300)
        if not failure:
            record(f"v{cluster.version}: helm install → allocatable {GPU} > 0", f"{time.monotonic() - start:.1f} s")
        wait_for(f"pod {POD} Running", lambda: cluster.pod_phase(TEST_NS, POD) == "Running" or bool(failure),
                 timeout=300)
        if not failure:
            record(f"v{cluster.version}: helm install → first GPU pod Running", f"{time.monotonic() - start:.1f} s")
        wait_for("helm install to return (post-install validation Job)", finished.is_set, timeout=600)
        state.install_s = time.monotonic() - start
        logs.join(timeout=60)
        if failure:
            raise failure[0]
        record(f"v{cluster.version}: helm install (with its validation Job)", f"{state.install_s:.1f} s")
        yield state
    finally:
        cluster.delete_namespace(TEST_NS)
        if release.installed:
            release.uninstall()
        cluster.kubectl("label", "node", cluster.node, f"{PRESENT}-", check=False)


def test_every_daemonset_is_ready_and_the_node_advertises_8_gpus(installed: Installed, cluster: Cluster) -> None:
    names = wait_for("kgpu's DaemonSets Ready", lambda: cluster.daemonsets_ready(NAMESPACE, SELECTOR), timeout=180)
    assert names == ["kgpu-device-plugin", "kgpu-exporter", "kgpu-labeler"]
    assert cluster.allocatable() == 8
    assert int(cluster.node_object()["status"]["capacity"][GPU]) == 8


def test_the_node_carries_gpu_feature_discoverys_labels(installed: Installed, cluster: Cluster) -> None:
    labels = wait_for("GFD labels", lambda: (lb := cluster.node_labels()).get("nvidia.com/gpu.count") and lb)
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["nvidia.com/gpu.family"] == "hopper"
    assert labels["nvidia.com/cuda.driver-version.full"] == "580.95.05"
    assert labels["nvidia.com/gpu.compute.major"] == "9"


def test_a_2_gpu_pod_sees_exactly_its_gpus_and_podresources_agrees(installed: Installed, cluster: Cluster) -> None:
    # Given the pod that waited for GPUs during the install, when it runs, then its /dev holds the device nodes
    # of exactly 2 GPUs (plus the control nodes) and the driver's files are mounted read-only.
    listing = cluster.kubectl("exec", "-n", TEST_NS, POD, "--", "ls", "/dev", "/usr/local/nvidia/lib64",
                              "/usr/local/nvidia/bin")
    dev = set(re.findall(r"^(nvidia[\w-]*)$", listing, re.M))
    minors = {int(name[len("nvidia"):]) for name in dev if name[len("nvidia"):].isdigit()}
    assert len(minors) == 2, listing
    assert set(CONTROL_NODES) <= dev
    uuid_of = dict(simulated_gpus())
    seen = {uuid_of[m] for m in minors}
    assert "libnvidia-ml.so.1" in listing and "libcuda.so.1" in listing and "nvidia-smi" in listing
    env = cluster.kubectl("exec", "-n", TEST_NS, POD, "--", "env")
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in env
    with pytest.raises(subprocess.CalledProcessError) as written:
        cluster.kubectl("exec", "-n", TEST_NS, POD, "--", "sh", "-c", "echo x >> /usr/local/nvidia/lib64/libcuda.so.1")
    assert "Read-only file system" in written.value.stderr
    # And the kubelet's PodResources says the same 2 GPUs are the pod's.
    client = PodResourcesClient(Path("/var/lib/kubelet/pod-resources/kubelet.sock"))
    try:
        ours = [c for c in client.list() if (c.namespace, c.pod) == (TEST_NS, POD) and c.resource_name == GPU]
    finally:
        client.close()
    # (one ContainerDevices per device and NUMA node, as the kubelet reports topology)
    assert {i for c in ours for i in c.device_ids} == seen


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_the_exporter_service_endpoint_attributes_the_pods_gpus(installed: Installed, cluster: Cluster) -> None:
    # There is no kube-proxy in the lab: scrape the Service's endpoint, as Prometheus does.
    def endpoint() -> str | None:
        subsets = cluster.get("endpoints", "-n", NAMESPACE, "kgpu-exporter").get("subsets") or []
        for subset in subsets:
            for address in subset.get("addresses", []):
                return f"http://{address['ip']}:{subset['ports'][0]['port']}/metrics"
        return None

    url = wait_for("an endpoint of Service kgpu-exporter", endpoint)
    text = wait_for("DCGM_FI_DEV_GPU_UTIL with pod labels",
                    lambda: (t := _scrape(url)) and f'pod="{POD}"' in t and t)
    attributed = [line for line in text.splitlines()
                  if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and f'pod="{POD}"' in line]
    assert len(attributed) == 2, attributed
    for line in attributed:
        assert f'namespace="{TEST_NS}"' in line and 'container="cuda"' in line
    assert sum(line.startswith("DCGM_FI_DEV_GPU_UTIL{") for line in text.splitlines()) == 8


def test_validation_job_and_validate_pod_skip_cuda_honestly(installed: Installed, cluster: Cluster) -> None:
    # The post-install Job succeeded (helm install returned) and said why: CUDA was not run, nothing passed it.
    job_log = "\n".join(installed.validation_log)
    assert "skipped" in job_log and "simulated" in job_log, job_log
    assert re.search(r"pod\W.*ran; CUDA skipped", job_log), job_log
    # The same from an admin's shell: kgpu validate --pod with the cluster's kubeconfig.
    done = subprocess.run([str(REPO / ".venv/bin/kgpu"), "--simulate", "h100x8", "validate", "--pod", "--json",
                           "--skip", "driver,nvml,device-nodes,cuda,runtime,device-plugin",
                           "--kubeconfig", str(cluster.kubeconfig), "--namespace", TEST_NS,
                           "--image", "local/kgpu:0.1.0", "--timeout", "180s"],
                          capture_output=True, text=True, timeout=300)
    steps = {s["name"]: s for s in json.loads(done.stdout)}
    assert steps["pod"]["status"] == "skipped", steps["pod"]
    assert "ran; CUDA skipped: no real GPU" in steps["pod"]["detail"]
    assert not any(s["status"] == "passed" and s["name"] in ("cuda", "pod") for s in steps.values())
    assert done.returncode == 0, done.stderr


def test_a_fatal_xid_drops_allocatable_to_7_and_recovery_brings_8_back(installed: Installed,
                                                                       cluster: Cluster) -> None:
    (_, free_uuid) = simulated_gpus()[-1]
    inject_event({"uuid": free_uuid, "kind": "xid", "xid": 79})
    wait_for("allocatable 7 after XID 79", lambda: cluster.allocatable() == 7, timeout=60)
    inject_event({"uuid": free_uuid, "kind": "recovered"})
    wait_for("allocatable 8 after recovery", lambda: cluster.allocatable() == 8, timeout=60)


def test_a_kubelet_restart_is_survived(installed: Installed, cluster: Cluster) -> None:
    cluster.restart_kubelet()
    wait_for("the device plugin re-registered (allocatable 8)", lambda: cluster.allocatable() == 8, timeout=120)
    assert cluster.pod_phase(TEST_NS, POD) == "Running"
    wait_for("kgpu's DaemonSets Ready", lambda: cluster.daemonsets_ready(NAMESPACE, SELECTOR), timeout=120)


def test_a_configmap_edit_changes_allocatable_and_labels_together(installed: Installed, cluster: Cluster) -> None:
    # Given 8 whole GPUs: when an admin edits the ConfigMap to time-slice them 2 ways, then within 60 s the node
    # advertises 16 and its labels say replicas=2, and no pod was restarted; and back again.
    before = pod_identities(cluster)
    assert len(before) == 2
    config = cluster.get("configmap", "-n", NAMESPACE, "kgpu-config", "--show-managed-fields")
    text = config["data"]["config.yaml"]
    # Helm (v4: server-side apply) owns the data; it gets it back afterwards, or the next helm upgrade would
    # stop at a conflict with kubectl's edit (as an admin's would: helm upgrade --force-conflicts).
    (helm,) = {m["manager"] for m in config["metadata"]["managedFields"]
               if m["operation"] == "Apply" and "f:data" in m.get("fieldsV1", {})}
    shared = text + ("sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n")
    try:
        cluster.kubectl("patch", "configmap", "kgpu-config", "-n", NAMESPACE, "--type", "merge", "-p",
                        json.dumps({"data": {"config.yaml": shared}}))
        seconds = follows(cluster, 16, "2", "ConfigMap edit: 2 replicas per GPU")
        record(f"v{cluster.version}: ConfigMap edit → allocatable and labels", f"{seconds:.1f} s")
        assert cluster.node_labels()["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    finally:
        meta = config["metadata"]  # the whole object Helm applied: an apply gives up what it leaves out
        original = {"apiVersion": "v1", "kind": "ConfigMap", "data": config["data"], "metadata": {
            k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}}
        cluster.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={helm}", "-f", "-",
                        input=json.dumps(original))
    follows(cluster, 8, "1", "ConfigMap back: whole GPUs")
    assert pod_identities(cluster) == before  # the same pods, never restarted


def _allocatable_shown(described: str) -> str:
    """The nvidia.com/gpu count under "Allocatable:" in `kubectl describe node` output (grep -A8 of it)."""
    section = described.split("Allocatable:", 1)[1]
    found = re.search(r"^\s+nvidia\.com/gpu:\s+(\d+)$", section.split("\nSystem Info:")[0], re.M)
    assert found, described
    return found.group(1)


def _gpu_labels(cluster: Cluster) -> dict[str, str]:
    """The Node's nvidia.com/ labels but GFD's timestamp (it changes at every labelling)."""
    return {k: v for k, v in cluster.node_labels().items()
            if k.startswith("nvidia.com/") and k != "nvidia.com/gfd.timestamp"}


def _all_running(listing: str, components: set[str]) -> bool:
    """`kubectl get pods` lists a pod of each of ``components``, every pod listed Running with its containers ready
    (during a rollout an old pod is Terminating, or gone before its successor is there)."""
    rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
    listed = {name.rsplit("-", 1)[0] for name, *_ in rows}
    ready = all(status == "Running" and count.split("/")[0] == count.split("/")[1] for _, count, status, *_ in rows)
    return ready and listed == components


def test_the_readmes_time_slicing_upgrade_advertises_32_gpus_and_its_verify_step_shows_it(
        installed: Installed, cluster: Cluster, image: str, tmp_path: Path) -> None:
    # Given the release as installed, 8 whole GPUs, and a directory laid out like the checkout (the README's
    # helm upgrade names the chart by its path there), in which an admin writes the README's sharing.yaml:
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    readme.run(cluster, readme.command(INSTALL, "cat > sharing.yaml"), image, cwd=tmp_path)
    list_pods = readme.command(INSTALL, "kubectl -n kube-system get pods")
    describe = readme.command(INSTALL, "kubectl describe node")
    assert _allocatable_shown(readme.run(cluster, describe, image)) == "8"
    previous = installed.release.values()
    labels_before = _gpu_labels(cluster)
    pod = cluster.get("pod", "-n", TEST_NS, POD)["metadata"]["uid"]
    try:
        # when they run the README's helm upgrade (--reuse-values: lab-values.yaml's driver root and flags stay),
        start = time.monotonic()
        readme.helm(cluster, readme.command(INSTALL, "helm upgrade"), cwd=tmp_path, release=installed.release)
        follows(cluster, 32, "4", "the README's time-slicing upgrade")
        record(f"v{cluster.version}: README helm upgrade (time-slicing ×4) → 32 GPUs and labels",
               f"{time.monotonic() - start:.1f} s")
        assert cluster.node_labels()["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
        # then the README's Verify lists the device plugin's, the labeler's and the exporter's pods Running, and
        # the node's Allocatable shows 32 (the README's comment: 8, 32 with the sharing above).
        components = {"kgpu-device-plugin", "kgpu-labeler", "kgpu-exporter"}
        wait_for(f"the README's pod listing: a pod of each of {sorted(components)}, all Running and ready",
                 lambda: _all_running(readme.run(cluster, list_pods, image), components), timeout=60)
        assert _allocatable_shown(readme.run(cluster, describe, image)) == "32"
    finally:
        # The release as it was (helm upgrade with its values before), so the next tests find 8 whole GPUs.
        installed.release.upgrade(previous)
    follows(cluster, 8, "1", "the release's values before: whole GPUs")
    with contextlib.suppress(AssertionError):  # (the assertion below names the labels that differ)
        wait_for("the node's nvidia.com/ labels as before", lambda: _gpu_labels(cluster) == labels_before, timeout=30)
    assert _gpu_labels(cluster) == labels_before
    wait_for("kgpu's DaemonSets Ready", lambda: cluster.daemonsets_ready(NAMESPACE, SELECTOR), timeout=120)
    assert _allocatable_shown(readme.run(cluster, describe, image)) == "8"
    assert cluster.get("pod", "-n", TEST_NS, POD)["metadata"]["uid"] == pod  # the GPU workload ran throughout
    record(f"v{cluster.version}: … and back to whole GPUs", f"{time.monotonic() - start:.1f} s")


def test_helm_upgrade_to_mps_slices_changes_allocatable_and_labels_together(installed: Installed,
                                                                           cluster: Cluster) -> None:
    # Given 8 whole GPUs, one in use by the 2-GPU pod: when upgraded to MPS, 2 slices per GPU.
    mps = {"version": "v1", "flags": {"plugin": {"deviceListStrategy": "driver-mounts"}},
           "sharing": {"mps": {"resources": [{"name": GPU, "replicas": 2}]}}}
    installed.release.upgrade(lab_values(config=mps, mpsDaemon={**lab_values()["mpsDaemon"], "enabled": True}))
    labels = wait_for("labels of MPS sharing", lambda: (lb := cluster.node_labels()).get(
        "nvidia.com/gpu.sharing-strategy") == "mps" and lb, timeout=180)
    assert labels["nvidia.com/gpu.replicas"] == "2"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-SHARED"  # GFD's name for a shared GPU
    wait_for("allocatable 16 MPS slices", lambda: cluster.allocatable() == 16, timeout=180)
    # And back: whole GPUs, no sharing label.
    installed.release.upgrade(lab_values())
    wait_for("allocatable 8 whole GPUs again", lambda: cluster.allocatable() == 8, timeout=180)
    wait_for("sharing label gone", lambda: cluster.node_labels().get("nvidia.com/gpu.sharing-strategy") in
             (None, "none"), timeout=180)


def test_helm_uninstall_leaves_no_kgpu_object_label_taint_socket_or_file(installed: Installed,
                                                                          cluster: Cluster) -> None:
    cluster.kubectl("delete", "pod", "-n", TEST_NS, POD, "--wait=true")
    installed.release.uninstall()
    left = cluster.kubectl("get", "all,configmaps,serviceaccounts,roles,rolebindings,clusterroles,"
                           "clusterrolebindings,runtimeclasses", "-A", "-l", SELECTOR, "-o", "name")
    assert left.strip() == ""
    wait_for("allocatable nvidia.com/gpu gone", lambda: cluster.allocatable() == 0, timeout=120)
    node = cluster.node_object()
    labels_before, files_before = installed.before
    labels = {k: v for k, v in node["metadata"].get("labels", {}).items()
              if k.startswith("nvidia.com/") and k != PRESENT and k not in labels_before}  # gpu.present: the admin's
    taints = [t for t in node["spec"].get("taints", []) if t["key"].startswith("nvidia.com/")]
    assert (labels, taints) == ({}, [])
    assert sorted(set(kgpu_files_left()) - files_before) == []
    assert DRIVER_ROOT.exists()  # the admin's driver is not kgpu's to remove
