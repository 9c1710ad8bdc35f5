"""The runtime every long-running kgpu daemon shares (device plugin, exporter, labeler, MPS daemon).

* :class:`Daemon` — signals, supervised watchers, one HTTP endpoint with ``/healthz``, a clean stop;
* :class:`Watcher` — one reaction ticked over and over, restarted with :class:`Backoff` where it was;
* :class:`ConfigReload` — live reconfiguration from a changed config file;
* :class:`StopSignals` — SIGTERM/SIGINT heard at once, and a deadline on stopping.

Example::

    with Daemon("exporter") as daemon:
        daemon.watch("xid", xids.tick, interval=0)
        daemon.serve_http(parse_listen(":9400", "--listen"), {"/metrics": metrics})
        daemon.serve()
"""

from kgpu.daemon.backoff import Backoff
from kgpu.daemon.http import HttpEndpoint, Response, parse_listen
from kgpu.daemon.reload import ConfigReload
from kgpu.daemon.runtime import Daemon
from kgpu.daemon.signals import StopSignals
from kgpu.daemon.watcher import Watcher, WatcherStatus

__all__ = [
    "Backoff",
    "ConfigReload",
    "Daemon",
    "HttpEndpoint",
    "Response",
    "StopSignals",
    "Watcher",
    "WatcherStatus",
    "parse_listen",
]
