"""The push-notification receiver: a Git host calls it, the named GitSource fetches now.

``POST /hooks/gitsources/<namespace>/<name>`` with the push event as body, signed the
way GitHub and Gitea sign (``X-Hub-Signature-256: sha256=<HMAC of the body>``) or
carrying the secret itself the way GitLab does (``X-Gitlab-Token``). The body is not
trusted for anything but the signature: a notification only makes the source fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
PATH_PREFIX = "/hooks/gitsources/"

SecretLookup = Callable[[str, str], bytes | None]  # (namespace, name) -> secret, None: unknown
Notify = Callable[[str, str], None]


def authentic(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    signature = headers.get("x-hub-signature-256", "")
    if signature.startswith("sha256="):
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.removeprefix("sha256="), expected)
    token = headers.get("x-gitlab-token")
    return token is not None and hmac.compare_digest(token.encode(), secret)


def parse_path(path: str) -> tuple[str, str] | None:
    if not path.startswith(PATH_PREFIX):
        return None
    parts = path.removeprefix(PATH_PREFIX).split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


class Receiver:
    """A small threaded HTTP server; ``notify`` runs on its thread and must be quick."""

    def __init__(self, host: str, port: int, secret_for: SecretLookup, notify: Notify) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("webhook: " + format, *args)

        self._secret_for = secret_for
        self._notify = notify
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhooks", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

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
            request.end_headers()
            request.wfile.write(body)

        target = parse_path(request.path)
        if target is None:
            return reply(HTTPStatus.NOT_FOUND, "expected /hooks/gitsources/<namespace>/<name>")
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "notification too large")
        body = request.rfile.read(length)
        secret = self._secret_for(*target)
        headers = {key.lower(): value for key, value in request.headers.items()}
        # Unknown sources and bad signatures get the same answer: nothing to learn by probing.
        if secret is None or not authentic(secret, body, headers):
            return reply(HTTPStatus.UNAUTHORIZED, "unknown source or bad signature")
        self._notify(*target)
        return reply(HTTPStatus.ACCEPTED, "fetch scheduled")
