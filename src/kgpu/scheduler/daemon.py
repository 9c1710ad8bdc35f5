"""``kgpu scheduler-extender``: reflectors, the extender's HTTP endpoint and its metrics, until SIGTERM.

Example::

    run(ExtenderOptions(http_bind="127.0.0.1:8080"), stop)     # returns once ``stop`` is set
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.exposition import generate_latest

from kgpu.process import wait_for_stop
from kgpu.scheduler.extender import Extender, ExtenderConfig
from kgpu.scheduler.kube import KubeApi, kube_client, start_reflectors
from kgpu.scheduler.metrics import registry
from kgpu.scheduler.server import ExtenderServer, parse_listen
from kgpu.scheduler.state import ClusterState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExtenderOptions:
    http_bind: str = "127.0.0.1:8080"
    metrics_bind: str = ":9395"
    config: ExtenderConfig = field(default_factory=ExtenderConfig)
    legacy_metrics: bool = False
    kubeconfig: Path | None = None


def run(options: ExtenderOptions, stop: threading.Event) -> None:
    host, port = parse_listen(options.http_bind, "--http-bind")
    mhost, mport = parse_listen(options.metrics_bind, "--metrics-bind-address") if options.metrics_bind else ("", 0)
    client = kube_client(options.kubeconfig)
    state = ClusterState()
    extender = Extender(state, KubeApi(client, instance=socket.gethostname()), options.config)
    server = ExtenderServer(extender, host, port)
    reg = registry(state, options.legacy_metrics)
    metrics = ExtenderServer(extender, mhost, mport, verbs=False, metrics=lambda: generate_latest(reg),
                             flag="--metrics-bind-address") if options.metrics_bind else None
    start_reflectors(client, state, stop)
    server.start()
    if metrics is not None:
        metrics.start()
    log.info("serving", extra={"http_bind": f"{host}:{server.port}", "metrics_bind": options.metrics_bind,
                               "node_policy": options.config.node_policy, "gpu_policy": options.config.gpu_policy})
    try:
        wait_for_stop(stop)
    finally:
        server.stop()
        if metrics is not None:
            metrics.stop()
    log.info("stopped")
