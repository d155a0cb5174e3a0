"""The calls a large fleet makes most, answered in front of the framework.

Ten thousand agents hold a long-poll open, beat every few seconds and, after a step,
each takes its assignments, fetches the same three artifact files and reports. Through
the whole middleware and routing stack each such request costs about a millisecond of
CPU; answered here, a fraction of that. Only the common case is taken: an agent whose
token is cached (``deps.node_tokens``), a well-formed body or query, a node or file
this process knows. Anything else (an unknown token, a bad body, a cache miss) goes on
to the full stack unchanged, body included, which answers it as always: the gate, the
roles, the errors are the same.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bpfleet_api import deps, documents, heartbeats, ingest, metrics
from bpfleet_api.changes import NotFound
from bpfleet_api.models import utcnow
from bpfleet_api.notify import Waiters
from bpfleet_api.settings import get_settings
from bpfleet_core.protocol import MAX_REVISION, Heartbeat, NodeReport

HEARTBEAT_PATH = "/v1/agent/heartbeat"
STATUS_PATH = "/v1/agent/status"
ASSIGNMENTS_PATH = "/v1/agent/assignments"
ARTIFACT_FILE = re.compile(r"^/v1/artifacts/([0-9a-f]{64})/(object|manifest|signature)$")
SMALL_BODY = 1024  # a heartbeat is a few dozen bytes
JSON_HEADERS = [(b"content-type", b"application/json")]
FILE_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"cache-control", b"public, max-age=31536000, immutable"),
]

FileKey = tuple[str, str]  # digest, part


class ArtifactFiles:
    """Artifact files by (digest, part), the most recently used kept within ``limit``
    bytes. Content-addressed: a held file is never wrong. Concurrent misses of one
    file read it once."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit = limit
        self._held: OrderedDict[FileKey, bytes] = OrderedDict()
        self._size = 0
        self._loading: dict[FileKey, asyncio.Future[bytes]] = {}

    def get(self, key: FileKey) -> bytes | None:
        found = self._held.get(key)
        if found is not None:
            self._held.move_to_end(key)
        return found

    async def load(self, key: FileKey, read: Callable[[], Awaitable[bytes]]) -> bytes:
        held = self.get(key)
        if held is not None:
            return held
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            content = await read()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._loading[key]
        self._put(key, content)
        future.set_result(content)
        return content

    def forget(self, digests: list[str]) -> None:
        for key in [key for key in self._held if key[0] in digests]:
            self._size -= len(self._held.pop(key))

    def _put(self, key: FileKey, content: bytes) -> None:
        if len(content) > self.limit or key in self._held:
            return
        self._held[key] = content
        self._size += len(content)
        while self._size > self.limit:
            _, dropped = self._held.popitem(last=False)
            self._size -= len(dropped)


def _cached_node(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return deps.node_tokens().get(secret.strip())
    return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class AgentFastPath:
    def __init__(
        self,
        app: ASGIApp,
        *,
        buffer: heartbeats.HeartbeatBuffer,
        files: ArtifactFiles,
        reports: ingest.ReportBatcher,
        plane: documents.AgentPlane,
        waiters: Waiters,
    ) -> None:
        self.app, self.buffer, self.files, self.reports = app, buffer, files, reports
        self.plane, self.waiters = plane, waiters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == HEARTBEAT_PATH:
                await self._heartbeat(scope, receive, send)
                return
            if method == "POST" and path == STATUS_PATH:
                await self._status(scope, receive, send)
                return
            if method == "GET" and path == ASSIGNMENTS_PATH:
                await self._assignments(scope, receive, send)
                return
            if method == "GET" and (match := ARTIFACT_FILE.match(path)):
                content = self.files.get((match.group(1), match.group(2)))
                if content is not None and _cached_node(scope) is not None:
                    await _answer(send, 200, FILE_HEADERS, content)
                    return
        await self.app(scope, receive, send)

    async def _heartbeat(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        node = _cached_node(scope)
        length = _declared_length(scope)
        if node is None or length is None or length > SMALL_BODY:
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return  # the client went away
        try:
            beat = Heartbeat.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # the route says what is wrong
            return
        self.buffer.record(node, beat.revision, utcnow())
        interval = heartbeats.current(get_settings()).interval_seconds
        header = (heartbeats.INTERVAL_HEADER.lower().encode(), f"{interval:g}".encode())
        await _answer(send, 204, [header], b"")
        metrics.REQUEST_SECONDS.labels("heartbeat").observe(time.perf_counter() - started)

    async def _assignments(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        node = _cached_node(scope)
        query = _long_poll_query(scope.get("query_string", b""))
        if node is None or query is None or self.plane.revision_of(node) is None:
            await self.app(scope, receive, send)
            return
        after, wait = query
        waited = min(wait, get_settings().long_poll_max_seconds)
        try:
            document = await documents.long_poll(self.plane, self.waiters, node, after, waited)
        except NotFound:
            await self.app(scope, receive, send)  # the route says so, as always
            return
        if document is None:
            await _answer(send, 204, [], b"")
        else:
            revision = self.plane.revision_of(node)
            etag = (b"etag", f'"{node}@{revision}"'.encode())
            await _answer(send, 200, [*JSON_HEADERS, etag], document)
        metrics.REQUEST_SECONDS.labels("assignments").observe(time.perf_counter() - started)

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        node = _cached_node(scope)
        length = _declared_length(scope)
        if node is None or length is None or length > get_settings().max_body_bytes:
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return
        try:
            report = NodeReport.model_validate_json(body)
        except ValidationError:
            report = None
        if report is None or report.node != node:
            await self.app(scope, _replay(body, receive), send)  # the route refuses it
            return
        try:
            await self.reports.submit(report)
        except HTTPException as failure:
            content = json.dumps({"detail": failure.detail}).encode()
            await _answer(send, failure.status_code, JSON_HEADERS, content)
            return
        await _answer(send, 204, [], b"")
        metrics.REQUEST_SECONDS.labels("status").observe(time.perf_counter() - started)


async def _read(receive: Receive) -> bytes | None:
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _long_poll_query(query_string: bytes) -> tuple[int, float] | None:
    """``after`` and ``wait`` as the route takes them, or None for anything else."""
    after, wait = 0, 0.0
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            if name == b"after":
                after = int(value)
            elif name == b"wait":
                wait = float(value)
            elif name:
                return None
        except ValueError:
            return None
    if not 0 <= after <= MAX_REVISION or not 0 <= wait < math.inf:
        return None
    return after, wait


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the connection says next (a disconnect)."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if status != 204:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
