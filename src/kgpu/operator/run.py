"""Start the operator: the chart's values as the base, kopf's watches, the reconcile loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from kgpu.errors import ConfigError
from kgpu.fsio import read_text
from kgpu.operator.handlers import ApiWriter, ClusterView, build_registry
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


def run_operator(namespace: str, release: str, values: Path | None, kubeconfig: Path | None,
                 liveness: str | None, resync_s: float = 10.0) -> None:
    import kopf

    from kgpu.labels.node import kube_client

    base = load_base_values(values)
    client = kube_client(kubeconfig)
    view = ClusterView(namespace=namespace, release=release, base_values=base)
    registry = build_registry(view, lambda: ApiWriter(client, namespace), resync_s)

    if kubeconfig is not None:
        @kopf.on.login(registry=registry)
        def _login(**_: Any) -> kopf.ConnectionInfo | None:
            return kopf.login_with_kubeconfig(**_)  # type: ignore[no-any-return]

    logging.getLogger("kopf").setLevel(logging.WARNING)
    kopf.run(registry=registry, standalone=True, namespaces=[namespace], liveness_endpoint=liveness)
