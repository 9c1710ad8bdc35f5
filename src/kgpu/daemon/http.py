"""The one HTTP endpoint of a kgpu daemon: ``/healthz`` and whatever else the daemon serves (``/metrics``).

Plain HTTP on ``HOST:PORT`` (``:8081`` means every address, ``[::]:8081`` IPv6), one thread per request,
nothing that blocks on a GPU: each route is a function that returns a :class:`Response`.

Example::

    endpoint = HttpEndpoint(parse_listen(":8081", "--healthz"), {"/healthz": lambda: Response(200, b"ok\\n")})
    endpoint.start()
    ...
    endpoint.stop()
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kgpu.errors import ConfigError

log = logging.getLogger("kgpu.daemon")

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT


Route = Callable[[], Response]


def parse_listen(text: str, flag: str) -> tuple[str, int]:
    """``0.0.0.0:9400``, ``:9400`` (every address, as Go programs write it) or ``[::]:9400``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {text!r}: expected HOST:PORT such as 0.0.0.0:9400, :9400 or [::]:9400")
    return (host.strip("[]") or "0.0.0.0"), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: Mapping[str, Route]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            known = " ".join(sorted(self.server.routes))
            response = Response(404, f"not found; this daemon serves {known}\n".encode())
        else:
            try:
                response = route()
            except Exception:  # one failed request must not take the endpoint down
                log.exception("HTTP request failed", extra={"path": self.path})
                response = Response(500, b"internal error; see the daemon's log\n")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s", format % args)


class HttpEndpoint:
    """Serves ``routes`` on ``(host, port)`` until :meth:`stop`; :attr:`port` is the bound port (for port 0)."""

    def __init__(self, address: tuple[str, int], routes: Mapping[str, Route], flag: str = "--listen") -> None:
        host, port = address
        try:
            self._server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"{flag} {host}:{port}: cannot listen: {exc.strerror or exc}") from None
        self._server.routes = dict(routes)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,), name="kgpu-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HttpEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=1)
