"""Start the operator: the chart's values as the base, kopf's watches, the reconcile loop."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from kgpu.errors import ConfigError
from kgpu.fsio import read_text
from kgpu.labels.node import kube_client
from kgpu.operator.handlers import ApiWriter, ClusterView, build_registry
from kgpu.operator.policy import GROUP, KIND, PLURAL, VERSION
from kgpu.operator.reconcile import MANAGED_BY
from kgpu.operator.values import chart_defaults, coalesce

MAX_VALUES_BYTES = 1 << 20


def load_base_values(path: Path | None) -> dict[str, Any]:
    """The chart's defaults, with the values file the chart hands the operator (operator mode) over them."""
    defaults = chart_defaults()
    if path is None:
        return defaults
    try:
        if path.stat().st_size > MAX_VALUES_BYTES:
            raise ConfigError(f"--values {path}: larger than {MAX_VALUES_BYTES} bytes")
        loaded = yaml.safe_load(read_text(path, f"--values {path}"))
    except OSError as exc:
        raise ConfigError(f"--values {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--values {path}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if loaded is None:
        return defaults
    if not isinstance(loaded, dict):
        raise ConfigError(f"--values {path}: expected a mapping of chart values")
    return coalesce(defaults, loaded)


def delete_policies(namespace: str, release: str, kubeconfig: Path | None, timeout_s: float = 180.0) -> list[str]:
    """Delete every ClusterPolicy and wait until the DaemonSets they own, and those DaemonSets' pods, are gone.

    The chart's pre-delete hook runs this, so the node components stop (and take their Node conditions and
    labels with them) while their ServiceAccounts and RBAC still exist; Helm deletes those afterwards.
    """

    from lightkube.core.exceptions import ApiError
    from lightkube.generic_resource import create_global_resource
    from lightkube.resources.apps_v1 import DaemonSet
    from lightkube.resources.core_v1 import Pod


    client = kube_client(kubeconfig)
    resource = create_global_resource(GROUP, VERSION, KIND, PLURAL)
    deleted: list[str] = []
    try:
        for policy in client.list(resource):
            client.delete(resource, policy.metadata.name)
            deleted.append(policy.metadata.name)
    except ApiError as exc:
        if exc.status.code != 404:  # no CRD: nothing to delete
            raise
    owned = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/instance": release}
    pods = {"app.kubernetes.io/name": "kgpu", "app.kubernetes.io/instance": release}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = list(client.list(DaemonSet, namespace=namespace, labels=owned))
        if not left:
            running = [p for p in client.list(Pod, namespace=namespace, labels=pods)
                       if p.metadata and (p.metadata.labels or {}).get("app.kubernetes.io/component")
                       not in ("operator", "operator-cleanup", "validation")]
            if not running:
                return deleted
        time.sleep(1.0)
    raise ConfigError(f"the node DaemonSets of release {release} in {namespace} were not gone after {timeout_s:.0f} s")


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def login_in_cluster(account: Path = SERVICE_ACCOUNT) -> Any:
    """kopf's credentials from the pod's ServiceAccount and the API server address the kubelet gives every pod
    (KUBERNETES_SERVICE_HOST/PORT, as client-go and lightkube use it; kopf's own helper assumes the DNS name
    kubernetes.default.svc, which a cluster without cluster DNS cannot resolve). None outside a pod."""
    import kopf

    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = account / "token"
    if not host or not token_file.exists():
        return None
    host = f"[{host}]" if ":" in host else host
    ca = account / "ca.crt"
    namespace = account / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://{host}:{port}", token=token_file.read_text().strip(),
        ca_path=str(ca) if ca.exists() else None,
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
    )


def run_operator(namespace: str, release: str, values: Path | None, kubeconfig: Path | None,
                 liveness: str | None, resync_s: float = 10.0) -> None:
    import kopf


    base = load_base_values(values)
    client = kube_client(kubeconfig)
    view = ClusterView(namespace=namespace, release=release, base_values=base)
    registry = build_registry(view, lambda: ApiWriter(client, namespace), resync_s)

    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf's own client reads the same file as lightkube

    # kopf registers its default login handlers on its global registry only: this one needs its own.
    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login_in_cluster() or kopf.login_with_kubeconfig(**kwargs)  # type: ignore[no-any-return]

    logging.getLogger("kopf").setLevel(logging.WARNING)
    kopf.run(registry=registry, standalone=True, namespaces=[namespace], liveness_endpoint=liveness)
