"""The HTTP side of ``kgpu exporter``: ``/metrics`` and ``/healthz`` on one listening address."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from kgpu.errors import ConfigError
from kgpu.exporter.families import CONTENT_TYPE

log = logging.getLogger(__name__)


class MetricsSource(Protocol):
    def render(self) -> str: ...


def parse_listen(text: str) -> tuple[str, int]:
    """``0.0.0.0:9400``, ``:9400`` (all addresses, as dcgm-exporter writes it) or ``[::]:9400``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT such as 0.0.0.0:9400, :9400 or [::]:9400")
    host = host.strip("[]")
    return (host or "0.0.0.0"), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    source: MetricsSource


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = self.server.source.render().encode()
            except Exception:
                log.exception("scrape failed")
                self._send(500, b"scrape failed; see the exporter's log\n", "text/plain; charset=utf-8")
                return
            self._send(200, body, CONTENT_TYPE)
        elif path in ("/healthz", "/health"):
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, b'<html><body><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>'
                            b"</body></html>\n", "text/html; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s", format % args)


class MetricsServer:
    """Serves ``source`` until :meth:`stop`; :attr:`port` is the bound port (useful with port 0)."""

    def __init__(self, source: MetricsSource, host: str, port: int) -> None:
        try:
            server_class = _Server6 if ":" in host else _Server
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"--listen {host}:{port}: cannot listen: {exc.strerror or exc}") from exc
        self._server.source = source
        self._thread = threading.Thread(target=self._server.serve_forever, name="kgpu-exporter-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
