"""The push-notification receiver: a Git host calls it, the named GitSource fetches now.

``POST /hooks/gitsources/<namespace>/<name>`` with the push event as body, signed the
way GitHub and Gitea sign (``X-Hub-Signature-256: sha256=<HMAC of the body>``) or
carrying the secret itself the way GitLab does (``X-Gitlab-Token``). The body is not
trusted for anything but the signature: a notification only makes the source fetch.

It faces whoever can reach it, so it spends little on a stranger: the source and its
secret are looked up from the path before any of the body is read (unknown sources and
bad signatures get the same answer), the body must announce a length of at most
``MAX_BODY``, every connection has ``timeout`` seconds to arrive, and at most
``connections`` are handled at once (the rest get 503 at once).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
PATH_PREFIX = "/hooks/gitsources/"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

SecretLookup = Callable[[str, str], bytes | None]  # (namespace, name) -> secret, None: unknown
Notify = Callable[[str, str], None]


def authentic(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    """Signed with ``secret``, or carrying it; never for an empty secret. Compared as
    bytes: a header may hold any character, and ``compare_digest`` takes ASCII text only."""
    if not secret:
        return False
    signature = headers.get("x-hub-signature-256", "")
    if signature.startswith("sha256="):
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        return hmac.compare_digest(signature.removeprefix("sha256=").encode(), expected)
    token = headers.get("x-gitlab-token")
    return token is not None and hmac.compare_digest(token.encode(), secret)


def parse_path(path: str) -> tuple[str, str] | None:
    if not path.startswith(PATH_PREFIX):
        return None
    parts = path.removeprefix(PATH_PREFIX).split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def body_length(value: str | None) -> int | None:
    """The announced body length; None unless it is a plain decimal number."""
    if value is None or not value.isdigit() or not value.isascii():
        return None
    return int(value)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``connections`` of them; the rest are told 503."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: Any, connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1)
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Receiver:
    """A small threaded HTTP server; ``notify`` runs on its thread and must be quick."""

    def __init__(
        self,
        host: str,
        port: int,
        secret_for: SecretLookup,
        notify: Notify,
        *,
        connections: int = 16,
        timeout: float = 10.0,
    ) -> None:
        receiver = self
        seconds = timeout

        class Handler(BaseHTTPRequestHandler):
            timeout = seconds  # the socket's, for every read and write

            def do_POST(self) -> None:
                try:
                    receiver._handle(self)
                except (TimeoutError, ConnectionError) as error:
                    log.debug("webhook: %s: %s", self.client_address[0], error)
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                log.debug("webhook: " + format, *args)

        self._secret_for = secret_for
        self._notify = notify
        self._server = _BoundedServer((host, port), Handler, connections)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhooks", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        def reply(status: HTTPStatus, text: str) -> None:
            body = (text + "\n").encode()
            request.send_response(status)
            request.send_header("Content-Type", "text/plain")
            request.send_header("Content-Length", str(len(body)))
            request.send_header("Connection", "close")  # the body may be left unread
            request.end_headers()
            request.wfile.write(body)
            request.close_connection = True

        target = parse_path(request.path)
        if target is None:
            return reply(HTTPStatus.NOT_FOUND, "expected /hooks/gitsources/<namespace>/<name>")
        # Unknown sources and bad signatures get the same answer: nothing to learn by
        # probing, and a stranger's body is never read.
        secret = self._secret_for(*target)
        if not secret:
            return reply(HTTPStatus.UNAUTHORIZED, "unknown source or bad signature")
        if "Transfer-Encoding" in request.headers:  # chunked: the length is not known first
            return reply(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        length = body_length(request.headers.get("Content-Length", "0"))  # none: no body
        if length is None:
            return reply(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
        if length > MAX_BODY:
            return reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "notification too large")
        body = request.rfile.read(length)
        headers = {key.lower(): value for key, value in request.headers.items()}
        if len(body) != length or not authentic(secret, body, headers):
            return reply(HTTPStatus.UNAUTHORIZED, "unknown source or bad signature")
        self._notify(*target)
        return reply(HTTPStatus.ACCEPTED, "fetch scheduled")
