"""A lean HTTP/1.1 client for load generators: one keep-alive connection, one request
at a time, on asyncio's protocol layer.

A general client (aiohttp, httpx) spends a few hundred microseconds of CPU per request
in Python; ten thousand simulated agents on the same two cores as the server would then
spend more CPU than the server they measure. This one writes the request bytes whole
and parses only what the agent protocol answers (a status line, headers, a body sized
by Content-Length or sent chunked), so the generator costs a fraction of that. It is
still real HTTP over real TCP: the server cannot tell it from an agent.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import cast

NO_BODY = frozenset({204, 304})
MAX_HEAD = 64 << 10


class ConnectionClosed(ConnectionError):
    """The server closed the connection before a whole response arrived."""


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Waited:
    """Where one request's time went (seconds), as a generator reports it."""

    queued: float = 0.0  # for this client's one connection, busy with another request
    connecting: float = 0.0  # opening a new connection
    sent: float = 0.0  # when the request's bytes were written (time.time())


@dataclass
class _Parser:
    """Incremental parse of one response; ``feed`` returns it once whole."""

    buffer: bytearray = field(default_factory=bytearray)
    head: tuple[int, dict[bytes, bytes]] | None = None

    def feed(self, data: bytes) -> Response | None:
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise ValueError("response head too long")
                return None
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            del self.buffer[: end + 4]
            status = int(lines[0].split(b" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            self.head = (status, headers)
        status, headers = self.head
        if status in NO_BODY:
            return Response(status, headers, b"")
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = _dechunk(self.buffer)
            if body is None:
                return None
            return Response(status, headers, body)
        length = int(headers.get(b"content-length", b"0"))
        if len(self.buffer) < length:
            return None
        return Response(status, headers, bytes(self.buffer[:length]))


def _dechunk(buffer: bytearray) -> bytes | None:
    """The body of a whole chunked message, or None while it is incomplete."""
    body, position = bytearray(), 0
    while True:
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        size = int(bytes(buffer[position:end]).split(b";")[0], 16)
        start = end + 2
        if size == 0:
            return bytes(body) if buffer.find(b"\r\n", start) >= 0 else None
        if len(buffer) < start + size + 2:
            return None
        body += buffer[start : start + size]
        position = start + size + 2


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = _Parser()
        self.waiter: asyncio.Future[Response] | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface without the class
        self.transport, self.open = cast(asyncio.Transport, transport), True

    def data_received(self, data: bytes) -> None:
        try:
            response = self.parser.feed(data)
        except ValueError as error:
            self._fail(ConnectionClosed(f"unreadable response: {error}"))
            return
        if response is not None:
            self.parser = _Parser()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(response)
            if response.headers.get(b"connection", b"").lower() == b"close":
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(ConnectionClosed(str(exc) if exc else "closed by the server"))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class Client:
    """One connection to ``host:port`` from ``source`` (an address to bind), opened on
    first use and kept alive; requests wait their turn for it. A request that finds its
    kept connection closed by the server goes again once on a new one, as HTTP clients
    do."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self.host, self.port, self.source = host, port, source
        self._connection: _Connection | None = None
        self._turn = asyncio.Lock()

    async def request(
        self,
        method: str,
        target: str,
        headers: bytes,
        body: bytes = b"",
        *,
        timeout: float = 400.0,
        waited: Waited | None = None,
    ) -> Response:
        """``headers``: extra header lines, each ending in CRLF."""
        waited = waited if waited is not None else Waited()
        queued_at = time.time()
        async with self._turn:
            waited.queued = time.time() - queued_at
            message = (
                (
                    f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                ).encode()
                + headers
                + b"\r\n"
                + body
            )
            reused = self._connection is not None and self._connection.open
            try:
                return await asyncio.wait_for(self._exchange(message, waited), timeout)
            except ConnectionClosed:
                if not reused:
                    raise
                return await asyncio.wait_for(self._exchange(message, waited), timeout)

    async def _exchange(self, message: bytes, waited: Waited) -> Response:
        connection = self._connection
        if connection is None or not connection.open:
            started = time.time()
            connection = self._connection = await self._connect()
            waited.connecting = time.time() - started
        assert connection.transport is not None
        connection.waiter = asyncio.get_running_loop().create_future()
        waited.sent = time.time()
        connection.transport.write(message)
        try:
            return await connection.waiter
        except BaseException:
            connection.close()  # a response half-read or abandoned: not reusable
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The port is picked at connect(), by the whole 4-tuple: bound to port 0,
            # the kernel would search for a port free on the address alone, a search
            # that grows with every connection the generator holds.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), 30)
            _, connection = await loop.create_connection(_Connection, sock=sock)
        except BaseException:
            sock.close()
            raise
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
