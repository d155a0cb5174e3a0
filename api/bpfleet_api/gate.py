"""The API's front door, an ASGI middleware: a request without a valid credential is
refused before a byte of its body is read, and every body is capped by route, while it
streams in (a declared length over the cap is refused before reading at all).

FastAPI reads and parses a body before it resolves a route's dependencies, so the roles
checked there (``deps``) come too late to keep strangers from making the API read,
parse or spool what they send. Roles stay with the routes; this only asks whether the
caller is anyone at all.
"""

from __future__ import annotations

import json

from fastapi import HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bpfleet_api import db, deps, security
from bpfleet_api.models import Role
from bpfleet_api.settings import get_settings

# Open without a credential: liveness, and signing in (whose body carries the token).
OPEN_ROUTES = frozenset({("GET", "/healthz"), ("HEAD", "/healthz"), ("POST", "/v1/session")})
# The dashboard's files (the page and its scripts hold no fleet data: that comes from
# /v1 with the session), so a browser can load the sign-in page.
OPEN_FILES = ("/", "/ui")
OPEN_BODY_BYTES = 16 * 1024
UPLOAD_ROUTES = frozenset({("POST", "/v1/artifacts")})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the request body is larger than this route takes ({limit} bytes)",
        )


def is_open(method: str, path: str) -> bool:
    if (method, path) in OPEN_ROUTES:
        return True
    return method in ("GET", "HEAD") and (path in OPEN_FILES or path.startswith("/ui/"))


def body_limit(method: str, path: str) -> int:
    if (method, path) in OPEN_ROUTES:
        return OPEN_BODY_BYTES
    settings = get_settings()
    return settings.max_upload_bytes if (method, path) in UPLOAD_ROUTES else settings.max_body_bytes


def _is_valid(secret: str) -> bool:
    """Is ``secret`` a valid token? Agent tokens are remembered (``deps.node_tokens``)."""
    with Session(db.get_engine()) as session:
        token = security.lookup(session, secret)
    if token is None:
        return False
    if token.role == Role.AGENT and token.node is not None:
        deps.node_tokens().put(secret, token.node)
    return True


async def authenticate(method: str, headers: Headers) -> None:
    """Raise 401 (or 403, for a cookie write without the UI's header) unless the request
    carries a valid credential."""
    cookies = cookie_parser(headers.get("cookie", ""))
    secret = deps.presented_secret(
        method,
        headers.get("authorization"),
        cookies.get(deps.SESSION_COOKIE),
        headers.get(deps.CSRF_HEADER),
    )
    if deps.node_tokens().get(secret) is not None:
        return
    if not await run_in_threadpool(_is_valid, secret):
        raise deps.unauthorized("unknown, expired or revoked token")


async def _refuse(send: Send, error: HTTPException) -> None:
    body = json.dumps({"detail": error.detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The body was not read: the connection cannot carry another request.
        (b"connection", b"close"),
        *((name.lower().encode(), value.encode()) for name, value in (error.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Gate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = Headers(scope=scope)
        if not is_open(method, path):
            try:
                await authenticate(method, headers)
            except HTTPException as refused:
                await _refuse(send, refused)
                return
        limit = body_limit(method, path)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, BodyTooLarge(limit))
            return
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except BodyTooLarge as too_large:
            # Routes turn it into a 413 themselves; this is for a reader that did not.
            if started:
                raise
            await _refuse(send, too_large)
