"""What a test module leaves on the cluster and its node: found, named and cleaned between modules.

conftest.py takes a ``Snapshot`` before each module and compares after the module's own teardown. What the
module added and did not take away (a Node label, annotation, taint or condition, a GPU count still
advertised, a pod, namespace, Helm release or cluster-scoped object, a file of kgpu's on the node) fails the
module's last test, naming it, and is then cleaned, so that the next module is judged on its own: the CI run
that failed a test for what the operator's module had left (``nvidia.com/mig-1g.10gb: 56``) is the reason.

One thing is not a module's fault and is cleaned without failing: a resource a device plugin advertised stays
in the Node's capacity (allocatable 0) for the kubelet's 5 minutes of grace after the plugin left, as on any
node. It is harmless until the kubelet restarts without its device checkpoint (the lab does that when it
switches versions): the kubelet then never mentions the resource again and the Node keeps it, allocatable =
capacity, for good. ``forget_stale_resources`` takes such resources away at the start and end of a run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import Cluster, wait_for
from node import kgpu_files_left

KGPU_PREFIXES = ("nvidia.com/", "kgpu.io/", "feature.node.kubernetes.io/pci-10de")
"""Node label/annotation/taint keys kgpu and its tests set (NFD's NVIDIA PCI label is set by hand in tests)."""
STANDARD_CONDITIONS = frozenset({"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"})
# Kinds whose objects a module creates; one `kubectl get` lists them all. Namespaced ones in every namespace.
KINDS = ("namespaces", "pods", "daemonsets.apps", "deployments.apps", "jobs.batch", "services", "configmaps",
         "serviceaccounts", "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
         "customresourcedefinitions.apiextensions.k8s.io", "clusterroles.rbac.authorization.k8s.io",
         "clusterrolebindings.rbac.authorization.k8s.io", "runtimeclasses.node.k8s.io",
         "mutatingwebhookconfigurations.admissionregistration.k8s.io",
         "validatingwebhookconfigurations.admissionregistration.k8s.io")
DRA_KINDS = ("deviceclasses.resource.k8s.io", "resourceslices.resource.k8s.io", "resourceclaims.resource.k8s.io")
NODE_FILE_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"), Path("/var/lib/kubelet/plugins_registry"),
                  Path("/var/lib/kubelet/plugins"))
"""Besides kgpu's own (node.kgpu_files_left): CDI specs and kubelet plugin sockets a DRA driver writes."""


def kgpu_key(key: str) -> bool:
    return key.startswith(KGPU_PREFIXES) or "kgpu" in key


@dataclass(frozen=True)
class Snapshot:
    labels: dict[str, str]
    annotations: dict[str, str]
    taints: frozenset[str]
    """``key=value:effect`` of the Node's kgpu taints."""
    conditions: frozenset[str]
    """Node condition types other than the kubelet's own."""
    allocatable: dict[str, int]
    """``nvidia.com/*`` resources the Node can give out now (non-zero only)."""
    capacity: frozenset[str]
    """``nvidia.com/*`` resources in the Node's capacity, whatever their count."""
    objects: frozenset[str]
    """``kind.group namespace/name`` (or ``kind.group name``) of every object of KINDS and Helm releases."""
    files: frozenset[str] = field(default_factory=frozenset)


def _resource(item: dict[str, Any]) -> str:
    """``kind.group`` as kubectl takes it (``daemonset.apps``, ``pod``)."""
    group = item["apiVersion"].rpartition("/")[0]
    return f"{item['kind'].lower()}.{group}" if group else item["kind"].lower()


def _object(item: dict[str, Any]) -> str:
    meta = item["metadata"]
    return f"{_resource(item)} {meta['namespace']}/{meta['name']}" if meta.get("namespace") else \
        f"{_resource(item)} {meta['name']}"


def _namespace(obj: str) -> str:
    """The namespace of a ``kind namespace/name`` line, "" for a cluster-scoped object."""
    namespace, slash, _ = obj.split(" ", 1)[1].partition("/")
    return namespace if slash else ""


def serves_dra(cluster: Cluster) -> bool:
    done = cluster.kubectl("api-resources", "--api-group=resource.k8s.io", "-o", "name", check=False)
    return "deviceclasses.resource.k8s.io" in done


def node_files() -> set[str]:
    found = set(kgpu_files_left())
    for top in NODE_FILE_DIRS:
        if top.is_dir():
            found |= {str(p) for p in top.rglob("*") if not p.is_dir()}
    return found


def snapshot(cluster: Cluster, dra: bool) -> Snapshot:
    items = cluster.get(",".join(KINDS + (DRA_KINDS if dra else ())), "-A")["items"]
    objects = {_object(i) for i in items}
    releases = cluster.get("secrets", "-A", "-l", "owner=helm")["items"]
    objects |= {f"helm-release {r['metadata']['namespace']}/{r['metadata']['labels'].get('name', '?')}"
                for r in releases}
    node = cluster.node_object()
    meta, spec, status = node["metadata"], node.get("spec", {}), node.get("status", {})
    return Snapshot(
        labels={k: v for k, v in meta.get("labels", {}).items() if kgpu_key(k)},
        annotations={k: v for k, v in meta.get("annotations", {}).items() if kgpu_key(k)},
        taints=frozenset(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in spec.get("taints", [])
                         if kgpu_key(t["key"])),
        conditions=frozenset(c["type"] for c in status.get("conditions", []) if c["type"] not in STANDARD_CONDITIONS),
        allocatable={k: int(v) for k, v in status.get("allocatable", {}).items()
                     if k.startswith("nvidia.com/") and v not in ("0", "")},
        capacity=frozenset(k for k in status.get("capacity", {}) if k.startswith("nvidia.com/")),
        objects=frozenset(objects),
        files=frozenset(node_files()) if cluster.on_lab else frozenset(),
    )


def left(before: Snapshot, after: Snapshot) -> list[str]:
    """What ``after`` holds that ``before`` did not, one line each (capacity-only remnants excluded)."""
    found: list[str] = []
    for what, was, now in (("label", before.labels, after.labels),
                           ("annotation", before.annotations, after.annotations)):
        for key, value in sorted(now.items()):
            if key not in was:
                found.append(f"node {what} {key}={value}")
            elif was[key] != value:
                found.append(f"node {what} {key}={value} (was {was[key]})")
    found += [f"node taint {t}" for t in sorted(after.taints - before.taints)]
    found += [f"node condition {c}" for c in sorted(after.conditions - before.conditions)]
    found += [f"allocatable {k}: {n} (was {before.allocatable.get(k, 0)}: something still advertises it)"
              for k, n in sorted(after.allocatable.items()) if n > before.allocatable.get(k, 0)]
    new = after.objects - before.objects
    new_namespaces = {o.split(" ", 1)[1] for o in new if o.startswith("namespace ")}
    found += [o for o in sorted(new) if _namespace(o) not in new_namespaces]  # a namespace stands for its objects
    found += [f"file {f}" for f in sorted(after.files - before.files)]
    return found


def settle(cluster: Cluster, before: Snapshot, dra: bool, timeout: float = 30) -> tuple[Snapshot, list[str]]:
    """The state once what the module removed is gone (pods terminate, the kubelet reports a plugin gone), or
    what is still there after ``timeout``."""
    last: list[tuple[Snapshot, list[str]]] = []

    def probe() -> bool:
        now = snapshot(cluster, dra)
        last[:] = [(now, left(before, now))]
        return not last[0][1]

    with contextlib.suppress(AssertionError):
        wait_for("the module's objects gone", probe, timeout=timeout)
    if not last:  # every probe failed: once more, failing loudly this time
        now = snapshot(cluster, dra)
        return now, left(before, now)
    return last[0]


def clean(cluster: Cluster, before: Snapshot, after: Snapshot) -> None:
    """Take away what ``after`` holds that ``before`` did not, releases first (their hooks clean the Node)."""
    from chart import Release  # helm_python: only when there is something to clean

    new = after.objects - before.objects
    for obj in sorted(o for o in new if o.startswith("helm-release ")):
        namespace, _, name = obj.split(" ", 1)[1].partition("/")
        with contextlib.suppress(Exception):
            Release(cluster, name, namespace).uninstall(timeout=120)
    namespaces = sorted(o.split(" ", 1)[1] for o in new if o.startswith("namespace "))
    # workloads before what they use; a namespace takes its objects with it
    order = ("daemonset.", "deployment.", "job.", "pod ")
    rest = sorted((o for o in new if not o.startswith(("helm-release ", "namespace "))),
                  key=lambda o: next((i for i, p in enumerate(order) if o.startswith(p)), len(order)))
    for obj in rest:
        kind, name = obj.split(" ", 1)
        namespace, _, name = name.rpartition("/")
        if namespace in namespaces:
            continue
        args = ["delete", kind, name, "--ignore-not-found", "--wait=true", "--timeout=60s"]
        cluster.kubectl(*args, *(["-n", namespace] if namespace else []), check=False, timeout=90)
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=120s",
                        check=False, timeout=150)
    node = ["node", cluster.node, "--overwrite"]
    for verb, was, now in (("label", before.labels, after.labels),
                           ("annotate", before.annotations, after.annotations)):
        changes = [f"{k}-" if k not in was else f"{k}={was[k]}" for k, v in now.items() if was.get(k) != v]
        if changes:
            cluster.kubectl(verb, *node, *changes, check=False)
    for taint in after.taints - before.taints:
        key, _, effect = taint.rpartition(":")
        cluster.kubectl("taint", "node", cluster.node, f"{key.partition('=')[0]}:{effect}-", check=False)
    if after.conditions - before.conditions:
        conditions = cluster.node_object()["status"].get("conditions", [])
        ops = [op for i, c in reversed(list(enumerate(conditions))) if c["type"] in after.conditions - before.conditions
               for op in ({"op": "test", "path": f"/status/conditions/{i}/type", "value": c["type"]},
                          {"op": "remove", "path": f"/status/conditions/{i}"})]
        cluster.kubectl("patch", "node", cluster.node, "--subresource=status", "--type=json", "-p", json.dumps(ops),
                        check=False)
    for path in after.files - before.files:
        Path(path).unlink(missing_ok=True)
    stale = set(after.allocatable) - set(before.allocatable) | {
        k for k, n in after.allocatable.items() if n > before.allocatable.get(k, 0)}
    if stale:
        forget_stale_resources(cluster, keep=before.capacity - stale)


def forget_stale_resources(cluster: Cluster, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Remove from the Node's status the ``nvidia.com/*`` resources (but ``keep``) that no device plugin on the
    node serves, so that a later kubelet restart cannot turn them into allocatable devices that are not there.
    On the lab, while no pod holds such a resource: the kubelet is restarted without its device checkpoint first
    (it would put them back while it remembers their plugin). Returns the resources removed."""
    names = in_status(cluster) - set(keep)
    if not names or not cluster.on_lab:
        return []
    if any(Path("/var/lib/kubelet/device-plugins").glob("nvidia*.sock")):
        return []  # a plugin is registered: what it advertises is not stale
    pods = cluster.get("pods", "-A", "--field-selector", f"spec.nodeName={cluster.node}")["items"]
    if any(name in (c.get("resources", {}).get("limits") or {}) for p in pods for c in p["spec"]["containers"]
           for name in names):
        return []  # a pod holds some: its devices must stay accounted for
    cluster.restart_kubelet(forget_devices=True)
    for name in sorted(names):
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.forget_stale_resource(name)
    wait_for(f"{', '.join(sorted(names))} gone from node {cluster.node}'s status",
             lambda: not names & in_status(cluster), timeout=30)
    return sorted(names)


def in_status(cluster: Cluster) -> set[str]:
    """The ``nvidia.com/*`` resources in the Node's capacity or allocatable, whatever their count."""
    status = cluster.node_object()["status"]
    return {k for part in ("capacity", "allocatable") for k in status.get(part, {}) if k.startswith("nvidia.com/")}
