"""``kgpu scheduler-extender``: reflectors, the extender's verbs and its status address, until SIGTERM.

Runs on kgpu's daemon runtime (:class:`kgpu.daemon.Daemon`): SIGTERM and SIGINT stop it at any point,
the status address serves ``/healthz``, ``/readyz`` (pods and nodes listed) and ``/metrics``.

Example::

    run(ExtenderOptions(http_bind="127.0.0.1:8080"))     # returns once stopped
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from kgpu.daemon import Daemon, Response, parse_listen
from kgpu.scheduler.extender import Extender, ExtenderConfig
from kgpu.scheduler.kube import KubeApi, kube_client, start_reflectors
from kgpu.scheduler.metrics import registry
from kgpu.scheduler.server import ExtenderServer
from kgpu.scheduler.state import ClusterState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExtenderOptions:
    http_bind: str = "127.0.0.1:8080"
    metrics_bind: str = ":9395"
    config: ExtenderConfig = field(default_factory=ExtenderConfig)
    legacy_metrics: bool = False
    kubeconfig: Path | None = None


def run(options: ExtenderOptions, stop: threading.Event | None = None) -> None:
    for name in ("httpx", "httpx2"):  # a line per API request would drown the extender's own lines
        logging.getLogger(name).setLevel(logging.WARNING)
    host, port = parse_listen(options.http_bind, "--http-bind")
    status = parse_listen(options.metrics_bind, "--metrics-bind-address") if options.metrics_bind else None
    with Daemon("scheduler-extender", stop=stop) as daemon:
        client = kube_client(options.kubeconfig)
        state = ClusterState()
        extender = Extender(state, KubeApi(client, instance=socket.gethostname()), options.config)
        verbs = ExtenderServer(extender, host, port).start()
        daemon.on_stop(verbs.stop)
        if status is not None:
            reg = registry(state, options.legacy_metrics)
            daemon.serve_http(status, {
                "/metrics": lambda: Response(200, generate_latest(reg), CONTENT_TYPE_LATEST),
                "/readyz": lambda: Response(200, b"ok\n") if state.synced.is_set()
                else Response(503, b"still listing pods and nodes\n"),
            }, flag="--metrics-bind-address")
        start_reflectors(client, state, daemon.stop)
        log.info("serving", extra={"http_bind": f"{host}:{verbs.port}", "metrics_bind": options.metrics_bind,
                                   "node_policy": options.config.node_policy,
                                   "gpu_policy": options.config.gpu_policy})
        daemon.serve()
    log.info("stopped")
