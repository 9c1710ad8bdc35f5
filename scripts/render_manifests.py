#!/usr/bin/env python3
"""Render deploy/helm/kgpu with its default values into deploy/manifests/kgpu.yaml, for admins without Helm.

Uses Helm's own template engine (the Go SDK, through helm-python-sdk) and orders the objects as
``helm install`` creates them (Helm's install order by kind; hooks last), so ``kubectl apply -f`` on the
result creates what ``helm install kgpu deploy/helm/kgpu -n kube-system`` would.

    python scripts/render_manifests.py            # rewrite deploy/manifests/kgpu.yaml
    python scripts/render_manifests.py --check    # exit 1 if the file differs from a fresh render
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "deploy" / "helm" / "kgpu"
MANIFEST = REPO / "deploy" / "manifests" / "kgpu.yaml"
RELEASE = "kgpu"
NAMESPACE = "kube-system"

# helm.sh/helm/v3 pkg/releaseutil/kind_sorter.go InstallOrder; kinds not listed come after, in template order.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
]
_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
_KIND = re.compile(r"^kind:[ \t]*(\S+)", re.MULTILINE)
_HOOK = re.compile(r"^[ \t]+helm\.sh/hook:", re.MULTILINE)
_DELETE_HOOK = re.compile(r"^[ \t]+helm\.sh/hook:[ \t]*\S*delete", re.MULTILINE)

HEADER = """\
# kgpu node components, rendered from deploy/helm/kgpu with its default values (release "kgpu", namespace
# kube-system) by scripts/render_manifests.py. Do not edit: change the chart and re-run the script.
#   kubectl apply -f deploy/manifests/kgpu.yaml
# The last object is the validation Job that `helm install` runs as a post-install hook; applied this way it
# starts at once and waits (up to its --timeout) for a GPU node to accept its test pod. What `helm uninstall`
# does after deleting (the chart's post-delete hook) is for you to run after `kubectl delete -f`:
#   kgpu labeler --prune      # removes the labels the labeler applied from every Node
"""


def render_documents(values: dict[str, Any] | None = None, namespace: str = NAMESPACE,
                     release: str = RELEASE) -> list[tuple[str, str]]:
    """(source template, YAML document) pairs in install order, hooks last; empty documents dropped."""
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values=values or {}, name=release, namespace=namespace, is_install=True)
    docs: list[tuple[int, bool, int, str, str]] = []
    for source in sorted(rendered):
        if not source.endswith((".yaml", ".yml")):
            continue  # NOTES.txt and helpers
        for text in _SEPARATOR.split(rendered[source]):
            body = text.strip("\n")
            if not _KIND.search(body):
                continue
            kind = _KIND.search(body).group(1)  # type: ignore[union-attr]
            order = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
            docs.append((len(docs), bool(_HOOK.search(body)), order, source, body))
    docs.sort(key=lambda d: (d[1], d[2], d[0]))
    return [(source, body) for _, _, _, source, body in docs]


def render_manifest(values: dict[str, Any] | None = None) -> str:
    parts = [HEADER]
    for source, body in render_documents(values):
        if _DELETE_HOOK.search(body):
            continue  # runs on helm uninstall; applied with kubectl it would run at once
        parts.append(f"---\n# Source: {source}\n{body}\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    args = parser.parse_args(argv)
    text = render_manifest()
    if args.check:
        current = MANIFEST.read_text() if MANIFEST.exists() else ""
        if current == text:
            print(f"{MANIFEST.relative_to(REPO)} is up to date")
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   str(MANIFEST.relative_to(REPO)), "fresh render"))
        print(f"{MANIFEST.relative_to(REPO)} is stale: run python scripts/render_manifests.py", file=sys.stderr)
        return 1
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(text)
    print(f"wrote {MANIFEST.relative_to(REPO)} ({text.count(chr(10) + '---')} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
