"""The extender's verbs over HTTP, for kube-scheduler only (keep it on 127.0.0.1 beside it):
``POST <prefix>/filter``, ``/prioritize``, ``/bind``; and ``GET /healthz``, ``/readyz`` there too.
(Probes and ``/metrics`` for the rest of the cluster are on the daemon's status address.)

kube-scheduler POSTs JSON to ``urlPrefix + "/" + verb`` and treats any status other than 200 as a
failed call, so answers to well-formed requests are 200 with the verb's result type (errors in
its ``Error`` field); a body that is not JSON, or larger than :data:`MAX_BODY`, is a 400/413.
The verb is the last path segment, so the ``urlPrefix`` may carry a path of its own.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kgpu.errors import ConfigError
from kgpu.scheduler.extender import Extender

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
"""A Pod and node names fit in a few kB; a NodeList (``nodeCacheCapable: false``) of thousands of nodes in a few MB."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    extender: Extender


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        verb = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        verbs: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "filter": self.server.extender.filter,
            "prioritize": self.server.extender.prioritize,
            "bind": self.server.extender.bind,
        }
        handler = verbs.get(verb)
        if handler is None:
            self._json(404, {"Error": f"unknown verb {verb!r}: the extender serves filter, prioritize and bind"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._json(411, {"Error": "a Content-Length is required"})
            return
        if int(length) > MAX_BODY:
            self._json(413, {"Error": f"request body of {length} bytes is larger than {MAX_BODY}"})
            self.close_connection = True
            return
        try:
            args = json.loads(self.rfile.read(int(length)))
        except ValueError as exc:
            self._json(400, {"Error": f"request body is not JSON: {exc}"})
            return
        if not isinstance(args, Mapping):
            self._json(400, {"Error": "request body must be a JSON object"})
            return
        started = time.monotonic()
        try:
            result = handler(args)
        except Exception:
            log.exception("extender verb failed", extra={"verb": verb})
            result = [] if verb == "prioritize" else {"Error": f"kgpu scheduler extender: internal error in {verb}"}
        log.debug("served", extra={"verb": verb, "ms": round((time.monotonic() - started) * 1000, 2)})
        self._json(200, result)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/healthz", "/livez"):
            self._text(200, "ok\n")
        elif path == "/readyz":
            if self.server.extender.state.synced.is_set():
                self._text(200, "ok\n")
            else:
                self._text(503, "still listing pods and nodes\n")
        else:
            self._text(404, "not found: POST filter, prioritize or bind; GET /healthz or /readyz\n")

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body, separators=(",", ":")).encode(), "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s", format % args)


class ExtenderServer:
    """Serves ``extender`` on ``host:port`` until :meth:`stop`; :attr:`port` is the bound port."""

    def __init__(self, extender: Extender, host: str, port: int) -> None:
        try:
            self._server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"--http-bind {host}:{port}: cannot listen: {exc.strerror or exc}") from None
        self._server.extender = extender
        self._thread = threading.Thread(target=self._server.serve_forever, name="extender-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ExtenderServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
