"""A fleet API gone bad, as a real HTTP server: it serves whatever artifact bytes a test
gives it, counts what it was asked, and can trickle a body a byte at a time."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bpfleet_core import artifacts

PARTS = ("object", "manifest", "signature")


@dataclass
class HostileApi:
    url: str
    # "/v1/artifacts/<digest>/<part>" -> body
    bodies: dict[str, bytes] = field(default_factory=dict)
    # Paths answered one byte every ``trickle_interval`` seconds, forever.
    trickled: set[str] = field(default_factory=set)
    trickle_interval: float = 0.05
    requests: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def serve_artifact(self, digest: str, files: artifacts.ArtifactFiles) -> None:
        for part in PARTS:
            self.bodies[f"/v1/artifacts/{digest}/{part}"] = getattr(files, part).read_bytes()

    def asked(self, digest: str) -> int:
        """How many artifact parts of ``digest`` were asked for."""
        return sum(1 for path in self.requests if path.startswith(f"/v1/artifacts/{digest}/"))


def _handler(api: HostileApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            api.requests.append(self.path)
            if self.path in api.trickled:
                self._trickle()
                return
            body = api.bodies.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            api.requests.append(self.path)
            self.send_response(204)
            self.end_headers()

        def _trickle(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            with contextlib.suppress(OSError):
                while not api.stopping.is_set():
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(api.trickle_interval)

    return Handler


@contextlib.contextmanager
def hostile_api(tls: tuple[Path, Path] | None = None) -> Iterator[HostileApi]:
    """A server on 127.0.0.1; ``tls``: (certificate chain, key) to serve https."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    api = HostileApi(url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.stopping.set()
        server.shutdown()
        server.server_close()
