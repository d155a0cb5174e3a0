"""The fleet API's side of the topology contract, played by a small real HTTP server that
records every request.

The routes the operator mirrors Kubernetes into (``PUT /v1/namespaces/{name}``,
``DELETE /v1/namespaces/{name}``, ``PUT /v1/nodes/{name}/pod-cidrs``,
``PUT /v1/nodes/{name}/workloads``) are being built in the API at the same time as
the operator's half. Until they exist, these tests hold the operator to that contract
against this recorder; the rest of the operator's tests run against the real API.

It knows the nodes in ``labels`` (a node registered by its agent); for any other node
the node routes answer 404, as the API does for a node it does not know.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_NODE_ROUTE = re.compile(r"^/v1/nodes/(?P<node>[^/]+)/(?P<part>labels|pod-cidrs|workloads)$")
_NAMESPACE_ROUTE = re.compile(r"^/v1/namespaces/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any


class FleetRecorder:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.labels: dict[str, dict[str, str]] = {}  # the nodes "registered", and their labels
        self.namespaces: dict[str, dict[str, str]] = {}
        self.pod_cidrs: dict[str, list[str]] = {}
        self.workloads: dict[str, list[dict[str, Any]]] = {}
        self.failing = False  # answer 503 to everything, as an API that is down
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder._serve(self)

            def do_PUT(self) -> None:
                recorder._serve(self)

            def do_DELETE(self) -> None:
                recorder._serve(self)

            def do_POST(self) -> None:
                recorder._serve(self)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def register(self, node: str, labels: dict[str, str] | None = None) -> None:
        """An agent registers (again): the node's labels are the agent's, as today."""
        with self._lock:
            self.labels[node] = dict(labels or {})

    def sent(self, method: str, path: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests if (r.method, r.path) == (method, path)]

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length)) if length else None
        with self._lock:
            self.requests.append(Request(request.command, request.path, body))
            if self.failing:
                status, answer = 503, {"detail": "unavailable"}
            else:
                status, answer = self._answer(request.command, request.path, body)
        payload = b"" if status == 204 else json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/v1/nodes"):
            return 200, [{"name": name, "labels": labels} for name, labels in self.labels.items()]
        node = _NODE_ROUTE.match(path)
        if node is not None and method == "PUT":
            name = node["node"]
            if name not in self.labels:
                return 404, {"detail": f"node {name} not found"}
            if node["part"] == "labels":
                self.labels[name] = dict(body["labels"])
            elif node["part"] == "pod-cidrs":
                self.pod_cidrs[name] = list(body["podCIDRs"])
            else:
                self.workloads[name] = list(body["workloads"])
            return 200, {"name": name}
        namespace = _NAMESPACE_ROUTE.match(path)
        if namespace is not None and method == "PUT":
            self.namespaces[namespace["name"]] = dict(body["labels"])
            return 200, {"name": namespace["name"]}
        if namespace is not None and method == "DELETE":
            self.namespaces.pop(namespace["name"], None)
            return 204, None
        return 404, {"detail": "Not Found"}

    def __enter__(self) -> FleetRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
