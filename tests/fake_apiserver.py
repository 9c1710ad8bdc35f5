"""A tiny Kubernetes API server for Node labels, over real HTTP, that records every request.

It implements the documented server-side apply rule for the ``metadata.labels`` map
(https://kubernetes.io/docs/reference/using-api/server-side-apply/, "Field management"): each
label key is owned by the managers that last set it; an apply owns exactly the keys it sends;
a key a manager applied before and omits now loses that owner, and is deleted when no owner
is left; a key another manager owns with a different value is a conflict (409) unless ``force``.
Plain updates (``kubectl label``) are modelled by :meth:`FakeApiServer.set_label`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeNode:
    labels: dict[str, str] = field(default_factory=dict)
    owners: dict[str, set[str]] = field(default_factory=dict)
    operations: dict[str, str] = field(default_factory=dict)
    """manager → Apply or Update, for metadata.managedFields."""
    taints: list[dict[str, str]] = field(default_factory=list)
    allocatable: dict[str, str] = field(default_factory=dict)
    resource_version: int = 1


class FakeApiServer:
    def __init__(self) -> None:
        self.nodes: dict[str, FakeNode] = {}
        self.requests: list[Recorded] = []
        self.forbid = False
        self.race_once = False
        """Bump the node's resourceVersion right after the next GET, as a concurrent writer would."""
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "admin", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}],
        }))
        return path

    def add_node(self, name: str, **labels: str) -> None:
        self.nodes[name] = FakeNode()
        for key, value in labels.items():
            self.set_label(name, key, value, manager="kubelet")

    def set_label(self, node: str, key: str, value: str, manager: str) -> None:
        n = self.nodes[node]
        n.labels[key] = value
        n.owners[key] = {manager}
        n.operations[manager] = "Update"

    def owned_by(self, node: str, manager: str) -> set[str]:
        return {k for k, who in self.nodes[node].owners.items() if manager in who}

    # -- HTTP ---------------------------------------------------------------------------------

    def _node_json(self, name: str) -> dict[str, Any]:
        n = self.nodes[name]
        doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": dict(n.labels), "resourceVersion": str(n.resource_version),
            "managedFields": self._managed_fields(n)}}
        if n.taints:
            doc["spec"] = {"taints": [dict(t) for t in n.taints]}
        if n.allocatable:
            doc["status"] = {"allocatable": dict(n.allocatable), "capacity": dict(n.allocatable)}
        return doc

    @staticmethod
    def _managed_fields(n: FakeNode) -> list[dict[str, Any]]:
        """One entry per manager with the label keys it owns, as the API server reports them."""
        entries = []
        for manager, operation in sorted(n.operations.items()):
            keys = sorted(k for k, who in n.owners.items() if manager in who)
            if keys:
                entries.append({"manager": manager, "operation": operation, "apiVersion": "v1",
                                "fieldsType": "FieldsV1",
                                "fieldsV1": {"f:metadata": {"f:labels": {f"f:{k}": {} for k in keys}}}})
        return entries

    def _json_patch(self, name: str, ops: list[dict[str, Any]]) -> str | None:
        """The two operations kgpu sends: test the resourceVersion, add (replace) /spec/taints."""
        n = self.nodes[name]
        for op in ops:
            if op["op"] == "test" and op["path"] == "/metadata/resourceVersion":
                if op["value"] != str(n.resource_version):
                    return "resourceVersion changed"
            elif op["op"] == "add" and op["path"] == "/spec/taints":
                n.taints = [dict(t) for t in op["value"]]
            else:
                raise AssertionError(f"unexpected JSON patch operation {op}")
        n.resource_version += 1
        return None

    def _apply(self, name: str, manager: str, force: bool, applied: dict[str, str]) -> str | None:
        n = self.nodes[name]
        n.resource_version += 1
        n.operations[manager] = "Apply"
        for key, value in applied.items():
            others = n.owners.get(key, set()) - {manager}
            if others and n.labels.get(key) != value and not force:
                return f"conflict with {sorted(others)} over .metadata.labels.{key}"
        for key in [k for k, who in n.owners.items() if manager in who and k not in applied]:
            n.owners[key].discard(manager)
            if not n.owners[key]:
                del n.owners[key], n.labels[key]
        for key, value in applied.items():
            if n.labels.get(key) != value:
                n.owners[key] = {manager}
            else:
                n.owners.setdefault(key, set()).add(manager)
            n.labels[key] = value
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": message, "reason": reason, "code": code})

            def _record(self) -> tuple[Recorded, str | None]:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                rec = Recorded(
                    method=self.command, path=url.path,
                    query={k: v[0] for k, v in parse_qs(url.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                with fake.lock:
                    fake.requests.append(rec)
                prefix = "/api/v1/nodes/"
                return rec, url.path[len(prefix):] if url.path.startswith(prefix) else None

            def do_GET(self) -> None:
                rec, name = self._record()
                if rec.path == "/api/v1/nodes" and not fake.forbid:
                    self._reply(200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"},
                                      "items": [fake._node_json(n) for n in sorted(fake.nodes)]})
                elif fake.forbid:
                    self._status(403, "Forbidden", f'nodes "{name}" is forbidden: User cannot get resource')
                elif name not in fake.nodes:
                    self._status(404, "NotFound", f'nodes "{name}" not found')
                else:
                    self._reply(200, fake._node_json(name))
                    if fake.race_once:
                        fake.race_once = False
                        fake.nodes[name].resource_version += 1

            def do_PATCH(self) -> None:
                rec, name = self._record()
                if name not in fake.nodes:
                    self._status(404, "NotFound", f'nodes "{name}" not found')
                    return
                if rec.headers.get("content-type") == "application/json-patch+json":
                    with fake.lock:
                        failed = fake._json_patch(name, rec.body)
                    if failed:
                        self._status(409, "Conflict", f"the object has been modified: {failed}")
                    else:
                        self._reply(200, fake._node_json(name))
                    return
                if rec.headers.get("content-type") != "application/apply-patch+yaml":
                    self._status(415, "UnsupportedMediaType", "only apply and JSON patch are modelled")
                    return
                labels = (rec.body or {}).get("metadata", {}).get("labels") or {}
                with fake.lock:
                    conflict = fake._apply(name, rec.query.get("fieldManager", ""),
                                           rec.query.get("force") == "true", labels)
                if conflict:
                    self._status(409, "Conflict", f"Apply failed with 1 conflict: {conflict}")
                else:
                    self._reply(200, fake._node_json(name))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
