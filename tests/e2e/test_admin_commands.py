"""The commands an admin reaches for next, against the real API server and kubelet (issue 16): run from the
node itself with kgpu's own command line, as the README shows them.

* ``kgpu node label --remove`` says what happened to the label and who still owns it (managedFields);
* ``kgpu lint --cluster --kubeconfig`` reads that cluster's Nodes and suggests only what they offer;
* ``kgpu validate`` without ``--node`` reads the allocatable of this machine's Node, whatever its name;
* ``kgpu validate --pod`` names why the pod's container did not start, and the fix for that reason;
* the README's ``kgpu labels --node`` and ``kgpu node label && kgpu node taint`` (taken from the README) label and
  taint the Node, and kgpu takes back what it set.

A simulated kgpu device plugin runs on the node for the module (no chart: it must not be installed).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import readme
from cluster import GPU, REPO, Cluster, wait_for

KGPU = REPO / ".venv" / "bin" / "kgpu"
PRESENT = "nvidia.com/gpu.present"
BUSYBOX = "local/busybox:1"  # imported by the lab; runs as root
LABELS = "Node labels"  # the README section
HOST_STEPS = "driver,nvml,device-nodes,cuda,runtime"


def kgpu(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KGPU), *args], env=cluster.env | {"KGPU_LOG_LEVEL": "warning"},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plugin(cluster: Cluster) -> Iterator[None]:
    """kgpu's device plugin on the node itself (simulated 8×H100), registered with the real kubelet."""
    if not cluster.on_lab:
        pytest.skip("runs a device plugin on this machine: the lab's node")
    if cluster.get("daemonsets", "-A", "-l", "app.kubernetes.io/part-of=kgpu")["items"]:
        pytest.fail("kgpu's chart is installed: this module runs its own device plugin on the node")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "device-plugin.log"
        with log.open("w") as sink:
            proc = subprocess.Popen([str(KGPU), "--simulate", "h100x8", "device-plugin", "--kubelet-dir",
                                     "/var/lib/kubelet/device-plugins", "--state-file", f"{tmp}/state.json"],
                                    env=cluster.env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_for("allocatable nvidia.com/gpu 8", lambda: cluster.allocatable(GPU) == 8 or None, timeout=60)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()


def test_label_remove_says_who_still_owns_the_label(cluster: Cluster) -> None:
    """Given nvidia.com/gpu.present set by hand (`kubectl label`) and then by `kgpu node label`, `--remove`
    withdraws kgpu-node's claim, exits 1 and names kubectl-label, which keeps it; with kgpu-node alone, the label
    goes. (A `kubectl label` of the value already there changes nothing, so the order matters: kubectl first.)"""
    if PRESENT in cluster.node_labels():
        pytest.skip(f"{cluster.node} already carries {PRESENT}: not touching a label someone else set")
    kubeconfig = str(cluster.kubeconfig)
    try:
        cluster.kubectl("label", "node", cluster.node, f"{PRESENT}=true")
        done = kgpu(cluster, "--simulate", "t4", "node", "label", "--node", cluster.node, "--kubeconfig", kubeconfig)
        assert done.returncode == 0, done.stderr
        done = kgpu(cluster, "node", "label", "--remove", "--node", cluster.node, "--kubeconfig", kubeconfig)
        assert done.returncode == 1
        assert f"{PRESENT}=true is still on node/{cluster.node}" in done.stderr
        assert "kubectl-label (Update) still owns it" in done.stderr
        assert cluster.node_labels().get(PRESENT) == "true"

        cluster.kubectl("label", "node", cluster.node, f"{PRESENT}-")
        kgpu(cluster, "--simulate", "t4", "node", "label", "--node", cluster.node, "--kubeconfig", kubeconfig)
        done = kgpu(cluster, "node", "label", "--remove", "--node", cluster.node, "--kubeconfig", kubeconfig)
        assert done.returncode == 0 and done.stdout == f"node/{cluster.node} unlabeled {PRESENT}\n", done.stderr
        assert PRESENT not in cluster.node_labels()
    finally:
        cluster.kubectl("label", "node", cluster.node, f"{PRESENT}-", check=False)


def test_lint_reads_the_cluster_through_kubeconfig_and_suggests_only_what_it_offers(
    cluster: Cluster, plugin: None, tmp_path: Path
) -> None:
    manifest = tmp_path / "half.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "half"},
        "spec": {"tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                 "containers": [{"name": "c", "image": BUSYBOX, "resources": {"limits": {GPU: "0.5"}}}]},
    }))
    offered = {name for node in cluster.get("nodes")["items"]
               for name, amount in node["status"].get("allocatable", {}).items()
               if name.startswith("nvidia.com/") and amount != "0"}
    done = kgpu(cluster, "lint", str(manifest), "--cluster", "--kubeconfig", str(cluster.kubeconfig))
    assert done.returncode == 1, done.stderr
    suggested = set(re.findall(r"nvidia\.com/[\w.-]+(?=: 1)", done.stdout))
    assert suggested and suggested <= offered, (suggested, offered, done.stdout)
    if offered == {GPU}:
        assert "request nvidia.com/gpu: 1 (a whole GPU)" in done.stdout


def test_validate_without_node_reads_this_machines_node(cluster: Cluster, plugin: None) -> None:
    """The Node is named what the kubelet registered (lab-node), not this machine's host name."""
    done = kgpu(cluster, "--simulate", "h100x8", "validate", "--json", "--kubeconfig", str(cluster.kubeconfig),
                "--skip", HOST_STEPS)
    step = {r["name"]: r for r in json.loads(done.stdout)}["device-plugin"]
    assert step["status"] == "passed", step
    # Other resources an earlier test left on the Node (MIG slices) may follow the GPUs' count.
    assert re.search(rf"node allocatable nvidia\.com/gpu: 8(, [^(]*)? \(node {cluster.node}:", step["detail"]), step
    if socket.gethostname() != cluster.node:
        assert "its addresses are this machine's" in step["detail"] or "only node" in step["detail"]


def test_validate_pod_names_an_image_that_runs_as_root(cluster: Cluster, plugin: None) -> None:
    """The validation pod runs as non-root; an image whose user is root cannot start. validate says so at
    once (not after --timeout), with that fix — not "the image cannot be pulled"."""
    done = kgpu(cluster, "validate", "--json", "--pod", "--kubeconfig", str(cluster.kubeconfig), "--skip",
                f"{HOST_STEPS},device-plugin", "--image", BUSYBOX, "--timeout", "10m", "--namespace", "default")
    step = {r["name"]: r for r in json.loads(done.stdout)}["pod"]
    assert step["status"] == "failed"
    assert "CreateContainerConfigError: container has runAsNonRoot and image will run as root" in step["detail"]
    assert step["fix"].startswith("the image runs as root")
    left = cluster.get("pods", "-n", "default", "-l", "app.kubernetes.io/component=validation-pod")["items"]
    assert all(pod["metadata"].get("deletionTimestamp") for pod in left)  # deleted (maybe still terminating)


def _from_the_node(cluster: Cluster) -> dict[str, str]:
    """The environment of a shell on the node with kgpu on PATH: NODE_NAME names its Node (as in kgpu's pods; the
    lab's Node is not named after this machine), KUBECONFIG the cluster, and the simulated 8×H100 is its GPU."""
    return cluster.env | {"NODE_NAME": cluster.node, "KGPU_SIMULATE": "h100x8", "KGPU_LOG_LEVEL": "warning",
                          "PATH": f"{KGPU.parent}:{cluster.env['PATH']}"}


def _gpu_taints(cluster: Cluster) -> list[dict[str, str]]:
    return [t for t in cluster.node_object()["spec"].get("taints", []) if t["key"] == GPU]


def test_labels_node_applies_the_nodes_labels_and_prune_takes_them(cluster: Cluster) -> None:
    """The README's `kgpu labels --node "$(hostname)"`, with the lab's Node for $(hostname): GFD's labels of the
    node on the Node (field manager kgpu), and `kgpu labeler --prune` (helm uninstall's hook) takes them back."""
    if "nvidia.com/gpu.product" in cluster.node_labels():
        pytest.skip(f"{cluster.node} already carries GPU labels: not touching labels someone else set")
    line = readme.command(LABELS, "kgpu labels --node").replace('"$(hostname)"', cluster.node)
    env = _from_the_node(cluster)
    try:
        done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        labels = cluster.node_labels()
        assert (labels.get("nvidia.com/gpu.product"), labels.get("nvidia.com/gpu.count")) == \
            ("NVIDIA-H100-80GB-HBM3", "8"), labels
    finally:
        pruned = subprocess.run(["kgpu", "labeler", "--prune"], env=env, capture_output=True, text=True, timeout=120)
    assert pruned.returncode == 0, pruned.stderr
    assert not {k for k in cluster.node_labels() if k.startswith("nvidia.com/gpu.")}


def test_node_label_and_taint_bootstrap_a_gpu_node(cluster: Cluster) -> None:
    """The README's `kgpu node label && kgpu node taint`, as written, from the node: gpu.present=true and the
    GPU taint; their --remove take both back."""
    if PRESENT in cluster.node_labels() or _gpu_taints(cluster):
        pytest.skip(f"{cluster.node} already carries {PRESENT} or a {GPU} taint: not touching what someone else set")
    env = _from_the_node(cluster)
    try:
        done = subprocess.run(["bash", "-c", readme.command(LABELS, "kgpu node label && kgpu node taint")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert cluster.node_labels().get(PRESENT) == "true"
        assert _gpu_taints(cluster) == [{"key": GPU, "value": "present", "effect": "NoSchedule"}]
    finally:
        for what in ("taint", "label"):
            subprocess.run(["kgpu", "node", what, "--remove"], env=env, capture_output=True, text=True, timeout=120)
    assert PRESENT not in cluster.node_labels() and not _gpu_taints(cluster)
