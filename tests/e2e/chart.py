"""kgpu's Helm chart installed, upgraded and uninstalled by Helm's own engine (helm-python-sdk: Helm v4's Go SDK)."""

from __future__ import annotations

import time
from typing import Any

import helm_python
import yaml
from cluster import REPO, Cluster, wait_for

CHART = REPO / "deploy" / "helm" / "kgpu"
LAB_VALUES = CHART / "ci" / "lab-values.yaml"
RELEASE = "kgpu"
NAMESPACE = "kube-system"
SELECTOR = "app.kubernetes.io/part-of=kgpu"


def lab_values(**overrides: Any) -> dict[str, Any]:
    """The values `make e2e` installs with (deploy/helm/kgpu/ci/lab-values.yaml), top-level keys replaced."""
    values: dict[str, Any] = yaml.safe_load(LAB_VALUES.read_text())
    return values | overrides


def pod_identities(cluster: Cluster, components: tuple[str, ...] = ("device-plugin", "labeler")) -> dict[str, Any]:
    """kgpu's pods of ``components``: name → (uid, restarts of each container). Equal before and after a change:
    the same pods, never restarted."""
    out: dict[str, Any] = {}
    # (pods carry the chart's selector labels, not app.kubernetes.io/part-of)
    selector = f"app.kubernetes.io/component in ({','.join(components)})"
    for p in cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]:
        if p["metadata"].get("deletionTimestamp") is None:
            restarts = {c["name"]: c.get("restartCount", 0) for c in p["status"].get("containerStatuses", [])}
            out[p["metadata"]["name"]] = (p["metadata"]["uid"], restarts)
    return out


def follows(cluster: Cluster, allocatable: int, replicas: str, what: str) -> float:
    """Seconds until the node's allocatable nvidia.com/gpu and its labels both describe a change (no
    gpu.replicas label counts as 1); fails after the 60 s within which issue 11 wants them to."""
    start = time.monotonic()
    wait_for(f"{what}: allocatable {allocatable} and gpu.replicas={replicas}",
             lambda: cluster.allocatable() == allocatable and cluster.node_labels().get(
                 "nvidia.com/gpu.replicas", "1") == replicas, timeout=60)
    return time.monotonic() - start


class Release:
    """One Helm release of the chart on ``cluster``; like `helm install/upgrade/uninstall -n NAMESPACE`."""

    def __init__(self, cluster: Cluster, name: str = RELEASE, namespace: str = NAMESPACE) -> None:
        self.cluster = cluster
        self.name = name
        self.namespace = namespace
        self.installed = False

    def _config(self) -> helm_python.Config:
        return helm_python.Config(kubeconfig_path=self.cluster.kubeconfig, namespace=self.namespace)

    def install(self, values: dict[str, Any], timeout: int = 600) -> dict[str, Any]:
        """`helm install`: returns once the objects exist and the post-install hooks (validation Job) succeeded."""
        with self._config() as config:
            if config.list(all_states=True, name_filter=f"^{self.name}$"):
                # never ours to remove: another user of the cluster left it, or is using it
                raise RuntimeError(f"a Helm release {self.name!r} already exists in {self.namespace}: the suite "
                                   "installs its own (helm uninstall it if it is a leftover)")
            self.installed = True  # from here on, a failed install leaves a release to uninstall
            release: dict[str, Any] = config.install(CHART, self.name, values, namespace=self.namespace,
                                                     timeout=timeout)
        return release

    def upgrade(self, values: dict[str, Any], timeout: int = 600) -> dict[str, Any]:
        with self._config() as config:
            release: dict[str, Any] = config.upgrade(CHART, self.name, values, namespace=self.namespace,
                                                     timeout=timeout)
        return release

    def uninstall(self, timeout: int = 300) -> None:
        """`helm uninstall --wait`: returns once every object of the release is gone."""
        with self._config() as config:
            config.uninstall(self.name, timeout=timeout, wait="watcher", ignore_not_found=True)
        self.installed = False

    def values(self) -> dict[str, Any]:
        with self._config() as config:
            got: dict[str, Any] = config.get_values(self.name)
        return got
