"""Conditional GETs for the reading API: an ``ETag`` on every JSON answer, and 304 when
the client already holds it. The dashboard polls every couple of seconds; most polls
then cost the browser no body and no re-render.

A pure ASGI middleware (no ``BaseHTTPMiddleware``), so long-polls and streamed bodies
elsewhere pass through untouched: only complete ``GET /v1/...`` JSON answers, outside
the agent protocol, are held to be hashed.
"""

from __future__ import annotations

import hashlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SKIPPED_PREFIXES = ("/v1/agent/", "/v1/gitsources/reconcile-requests")


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


class ETagMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not path.startswith("/v1/")
            or path.startswith(SKIPPED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        wanted = Headers(scope=scope).get("if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await _finish(start, b"".join(chunks))

        async def _finish(start: Message, body: bytes) -> None:
            headers = MutableHeaders(raw=list(start["headers"]))
            if start["status"] != 200 or "json" not in headers.get("content-type", ""):
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            etag = etag_of(body)
            headers["ETag"] = etag
            # Always revalidate: the fleet changes under the same URL at any moment.
            headers["Cache-Control"] = "no-cache"
            if matches(wanted, etag):
                del headers["content-length"]
                del headers["content-type"]
                await send({**start, "status": 304, "headers": headers.raw})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)
