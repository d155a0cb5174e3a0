"""A forge's REST API for the proposal tests: a real HTTPS server on loopback that records
every request and answers "create a pull request" the way GitHub, GitLab and Gitea do
(201 with the pull request's page and number), or as told (``status``, ``redirect``)."""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.gitrepos import self_signed_certificate


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ForgeServer:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[Request] = []
        self.status = 201
        self.redirect: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                server.requests.append(
                    Request(
                        "POST",
                        self.path,
                        {key.lower(): value for key, value in self.headers.items()},
                        json.loads(raw) if raw else None,
                    )
                )
                if server.redirect is not None:
                    self.send_response(307)
                    self.send_header("Location", server.redirect + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                number = len(server.requests)
                if server.status != 201:
                    answer: dict[str, Any] = {"message": "Validation Failed: head is invalid"}
                elif server.kind == "gitlab":
                    answer = {"iid": number, "web_url": f"{server.base}/mr/{number}"}
                else:
                    answer = {"number": number, "html_url": f"{server.base}/pulls/{number}"}
                payload = json.dumps(answer).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scratch = Path(tempfile.mkdtemp(prefix="bpfleet-forge-"))
        key_file, certificate_file, self.ca = self_signed_certificate(scratch)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate_file, key_file)
        shutil.rmtree(scratch)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ForgeServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
