"""Per-node configs on a real kubelet and API server (issue 11): the chart with configManager.enabled, the node
label nvidia.com/device-plugin.config picking one of the ConfigMap's configs, as NVIDIA's config-manager does.

An admin's checks: switching the label, and editing the chosen config in the ConfigMap, change the node's
allocatable and its labels together within 60 s, without restarting a pod.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart import NAMESPACE, SELECTOR, Release, follows, lab_values, pod_identities
from cluster import GPU, Cluster, wait_for
from conftest import record
from node import serving_mps_daemons

LABEL = "nvidia.com/device-plugin.config"
PRESENT = "nvidia.com/gpu.present"


COMPONENTS = ("device-plugin", "labeler", "mps-daemon")  # the pods that follow the chosen config


def time_slicing(replicas: int) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(lab_values()["config"])
    config["sharing"] = {"timeSlicing": {"resources": [{"name": GPU, "replicas": replicas}]}}
    return config


def mps(replicas: int) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(lab_values()["config"])
    config["sharing"] = {"mps": {"resources": [{"name": GPU, "replicas": replicas}]}}
    return config


@pytest.fixture(scope="module")
def release(cluster: Cluster, image: str, driver_root: Path) -> Iterator[Release]:
    """kgpu installed with two named configs besides the default one, and no validation Job; the node's
    labels are given back as they were."""
    found = cluster.node_labels()
    if cluster.on_lab and cluster.allocatable() > 0:
        cluster.restart_kubelet()  # a kubelet still counting an earlier plugin's GPUs (see test_chart.py)
    cluster.forget_stale_resource(GPU)
    cluster.kubectl("label", "node", cluster.node, f"{PRESENT}=true", "--overwrite")
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}-", check=False)
    release = Release(cluster)
    values = lab_values(configManager={"enabled": True}, validation={"enabled": False},
                        configs={"ts2": time_slicing(2), "ts4": time_slicing(4), "mps2": mps(2)},
                        mpsDaemon={**lab_values()["mpsDaemon"], "enabled": True})
    try:
        release.install(values)
        wait_for("allocatable 8 (the default config)", lambda: cluster.allocatable() == 8, timeout=300)
        wait_for("kgpu's DaemonSets Ready", lambda: cluster.daemonsets_ready(NAMESPACE, SELECTOR), timeout=300)
        yield release
    finally:
        cluster.kubectl("label", "node", cluster.node, f"{LABEL}-", check=False)
        if release.installed:
            release.uninstall()
        for key in (PRESENT, LABEL):
            if key in found:
                cluster.kubectl("label", "node", cluster.node, f"{key}={found[key]}", "--overwrite")
            else:
                cluster.kubectl("label", "node", cluster.node, f"{key}-", check=False)


@pytest.fixture
def unlabelled(release: Release, cluster: Cluster) -> Iterator[dict[str, Any]]:
    """The node on the default config; each test leaves it so, with the same pods, never restarted."""
    before = pod_identities(cluster, COMPONENTS)
    assert len(before) == 3
    yield before
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}-", check=False)
    follows(cluster, 8, "1", "label removed: the default config")
    assert pod_identities(cluster, COMPONENTS) == before


def test_switching_the_node_label_changes_allocatable_and_labels_together(unlabelled: dict[str, Any],
                                                                        cluster: Cluster) -> None:
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}=ts4", "--overwrite")
    seconds = follows(cluster, 32, "4", "label ts4")
    record(f"v{cluster.version}: node label → allocatable and labels (4 replicas)", f"{seconds:.1f} s")
    assert cluster.node_labels()["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}=ts2", "--overwrite")
    follows(cluster, 16, "2", "label ts2")


def test_editing_the_chosen_config_changes_allocatable_and_labels_together(unlabelled: dict[str, Any],
                                                                         cluster: Cluster) -> None:
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}=ts2", "--overwrite")
    follows(cluster, 16, "2", "label ts2")
    name = "kgpu-configs"
    original = cluster.get("configmap", "-n", NAMESPACE, name)["data"]["ts2"]
    try:
        cluster.kubectl("patch", "configmap", name, "-n", NAMESPACE, "--type", "merge", "-p",
                        json.dumps({"data": {"ts2": yaml.safe_dump(time_slicing(3))}}))
        seconds = follows(cluster, 24, "3", "ConfigMap edit ts2 → 3 replicas")
        record(f"v{cluster.version}: named config edit → allocatable and labels", f"{seconds:.1f} s")
    finally:
        # Helm's data back (kubectl patch took only the ts2 key; the next helm upgrade takes it back too)
        cluster.kubectl("patch", "configmap", name, "-n", NAMESPACE, "--type", "merge", "-p",
                        json.dumps({"data": {"ts2": original}}))
    follows(cluster, 16, "2", "ConfigMap edit undone")


def test_a_label_naming_no_config_keeps_the_current_one_and_says_why(unlabelled: dict[str, Any],
                                                                   cluster: Cluster) -> None:
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}=no-such-config", "--overwrite")
    wait_for("the config-manager's line saying why", lambda: "specified config no-such-config does not exist" in
             cluster.kubectl("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=device-plugin",
                             "-c", "config-manager", "--tail=50"), timeout=30)
    assert cluster.allocatable() == 8  # the default config stays in force


def test_a_label_picking_an_mps_config_gets_slices_served_by_mps_daemons(unlabelled: dict[str, Any],
                                                                       cluster: Cluster) -> None:
    # Given the node on the default config (whole GPUs): the MPS daemon runs beside the plugin but serves no GPU.
    assert serving_mps_daemons() == set()
    # When the label picks the MPS config, the plugin advertises 2 slices per GPU and the labels say so, and the
    # slices are healthy because the MPS daemon, following the same choice, runs a control daemon per GPU.
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}=mps2", "--overwrite")
    seconds = follows(cluster, 16, "2", "label mps2")
    record(f"v{cluster.version}: node label → MPS slices, labels and daemons", f"{seconds:.1f} s")
    labels = cluster.node_labels()
    assert (labels["nvidia.com/gpu.sharing-strategy"], labels["nvidia.com/mps.capable"]) == ("mps", "true")
    assert len(serving_mps_daemons()) == 8
    # And when the label goes, the daemons stop with the slices.
    cluster.kubectl("label", "node", cluster.node, f"{LABEL}-")
    follows(cluster, 8, "1", "label removed: whole GPUs")
    wait_for("no MPS daemon serving", lambda: serving_mps_daemons() == set(), timeout=30)
