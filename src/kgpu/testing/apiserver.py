"""A stand-in for the Kubernetes API server's pods and nodes, over real HTTP, for tests and device scripts.

It serves what kgpu's GPU-share handshake uses, with the API server's rules for it: list pods (all
namespaces, ``fieldSelector=spec.nodeName=…``), get a pod, JSON merge patch a pod (``metadata.uid``
and ``metadata.resourceVersion`` in the patch are preconditions: 409 when they do not match), create
a pod's binding (409 when already bound), list nodes, get and merge patch a node, and create events. Every
write bumps the object's resourceVersion. Objects are plain dicts shaped as the API serializes them.

Use it where no cluster is at hand — a unit test, or a GPU machine without a control plane — to give
kgpu's components the pods an extender would have placed::

    with ApiServerStandIn() as api:
        api.add_pod(pod_dict)                 # with hami.io/vgpu-devices-allocated etc.
        kubeconfig = api.kubeconfig(tmp_dir)  # for lightkube, kubectl, kgpu --kubeconfig
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1024 * 1024


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch: null deletes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class ApiServerStandIn:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, in order."""
        self.lock = threading.Lock()
        self._version = 1
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # -- objects ------------------------------------------------------------------------------------------
    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)

    def add_pod(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        copied = copy.deepcopy(dict(pod))
        meta = copied.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", f"uid-{meta.get('name')}")
        copied.setdefault("status", {}).setdefault("phase", "Pending")
        with self.lock:
            self._bump(copied)
            self.pods[(meta["namespace"], meta["name"])] = copied
        return copy.deepcopy(copied)

    def add_node(self, name: str, annotations: Mapping[str, str] | None = None) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": dict(annotations or {})}}
        with self.lock:
            self._bump(node)
            self.nodes[name] = node

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.pods[(namespace, name)])

    def node(self, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.nodes[name])

    # -- serving -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "admin", "user": {"token": "stand-in"}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "admin"}}],
        }))
        return path

    def __enter__(self) -> ApiServerStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, code: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                   "reason": reason, "code": code})

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return None
                return json.loads(self.rfile.read(length)) if length else None

            def _route(self) -> tuple[list[str], dict[str, str]]:
                url = urlsplit(self.path)
                with api.lock:
                    api.requests.append((self.command, url.path))
                return [p for p in url.path.split("/") if p], {k: v[0] for k, v in parse_qs(url.query).items()}

            def do_GET(self) -> None:
                parts, query = self._route()
                with api.lock:
                    if parts == ["api", "v1", "pods"] or (parts[:3] == ["api", "v1", "namespaces"] and \
                            len(parts) == 5 and parts[4] == "pods"):
                        wanted = dict(s.split("=", 1) for s in query.get("fieldSelector", "").split(",") if "=" in s)
                        items = [p for (ns, _), p in sorted(api.pods.items())
                                 if (len(parts) == 3 or ns == parts[3])
                                 and all(str((p.get("spec") or {}).get(k.split(".", 1)[1], "")) == v
                                         for k, v in wanted.items() if k.startswith("spec."))]
                        self._reply(200, {"apiVersion": "v1", "kind": "PodList",
                                          "metadata": {"resourceVersion": str(api._version)}, "items": items})
                    elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                        pod = api.pods.get((parts[3], parts[5]))
                        if pod is None:
                            self._status(404, "NotFound", f'pods "{parts[5]}" not found')
                        else:
                            self._reply(200, pod)
                    elif parts == ["api", "v1", "nodes"]:
                        self._reply(200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {
                            "resourceVersion": str(api._version)}, "items": [n for _, n in sorted(api.nodes.items())]})
                    elif len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
                        node = api.nodes.get(parts[3])
                        if node is None:
                            self._status(404, "NotFound", f'nodes "{parts[3]}" not found')
                        else:
                            self._reply(200, node)
                    else:
                        self._status(404, "NotFound", f"{self.path} is not served by the stand-in")

            def do_PATCH(self) -> None:
                parts, _ = self._route()
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    self._status(415, "UnsupportedMediaType", "the stand-in serves JSON merge patches only")
                    return
                patch = self._body() or {}
                with api.lock:
                    if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                        obj = api.pods.get((parts[3], parts[5]))
                    elif parts == ["api", "v1", "nodes"]:
                        self._reply(200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {
                            "resourceVersion": str(api._version)}, "items": [n for _, n in sorted(api.nodes.items())]})
                    elif len(parts) == 4 and parts[:3] == ["api", "v1", "nodes"]:
                        obj = api.nodes.get(parts[3])
                    else:
                        self._status(404, "NotFound", f"{self.path} is not served by the stand-in")
                        return
                    if obj is None:
                        self._status(404, "NotFound", f"{parts[-1]} not found")
                        return
                    meta, want = obj.get("metadata", {}), (patch.get("metadata") or {})
                    if "uid" in want and want["uid"] != meta.get("uid"):
                        self._status(409, "Conflict", f"Precondition failed: UID in precondition: {want['uid']}, "
                                                      f"UID in object meta: {meta.get('uid')}")
                        return
                    if "resourceVersion" in want and want["resourceVersion"] != meta.get("resourceVersion"):
                        self._status(409, "Conflict", "Operation cannot be fulfilled: the object has been modified; "
                                                      "please apply your changes to the latest version and try again")
                        return
                    _merge(obj, {**patch, "metadata": {k: v for k, v in want.items()
                                                       if k not in ("uid", "resourceVersion")}})
                    api._bump(obj)
                    self._reply(200, obj)

            def do_POST(self) -> None:
                parts, _ = self._route()
                body = self._body() or {}
                with api.lock:
                    if len(parts) == 7 and parts[4] == "pods" and parts[6] == "binding":
                        pod = api.pods.get((parts[3], parts[5]))
                        if pod is None:
                            self._status(404, "NotFound", f'pods "{parts[5]}" not found')
                        elif (pod.get("spec") or {}).get("nodeName"):
                            self._status(409, "Conflict", f"pod {parts[5]} is already assigned to node "
                                                          f"{pod['spec']['nodeName']}")
                        else:
                            pod.setdefault("spec", {})["nodeName"] = body["target"]["name"]
                            api._bump(pod)
                            self._reply(201, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                                              "code": 201})
                    elif len(parts) == 5 and parts[4] == "events":
                        api.events.append(body)
                        self._reply(201, body)
                    else:
                        self._status(404, "NotFound", f"{self.path} is not served by the stand-in")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
