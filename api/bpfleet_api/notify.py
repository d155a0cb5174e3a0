"""Waking agents' long-polls when their assignments change, and dropping revoked node
credentials, across processes.

The only module that talks to Redis directly (Celery has its own connection). Redis
carries node names only; a lost message costs latency, never state: waiters re-check
the database every few seconds anyway, and a cached credential expires on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL = "bpfleet:assignments"
REVOKED_CHANNEL = "bpfleet:revoked-nodes"


class Waiters:
    """In-process: the long-polls waiting per node, woken from any thread."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def wait(self, node: str, timeout: float) -> None:
        event = asyncio.Event()
        self._events[node].add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._events[node].discard(event)
            if not self._events[node]:
                del self._events[node]

    def wake(self, nodes: Iterable[str]) -> None:
        loop = self._loop
        if loop is None:
            return
        names = list(nodes)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._wake_now, names)

    def _wake_now(self, nodes: list[str]) -> None:
        for node in nodes:
            for event in self._events.get(node, ()):
                event.set()

    @property
    def count(self) -> int:
        return sum(len(events) for events in self._events.values())


def _publish(redis_url: str, channel: str, nodes: Iterable[str]) -> None:
    names = sorted(set(nodes))
    if not names:
        return
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(channel, "\n".join(names))
        finally:
            client.close()
    except redis.RedisError as error:
        log.warning("could not publish on %s: %s", channel, error)


def publish(redis_url: str, nodes: Iterable[str]) -> None:
    """Tell every API process; failure only delays agents until their next re-check."""
    _publish(redis_url, CHANNEL, nodes)


def publish_revoked(redis_url: str, nodes: Iterable[str]) -> None:
    """Tell every API process these nodes' credentials were revoked; failure leaves
    their caches trusting them until the entries expire."""
    _publish(redis_url, REVOKED_CHANNEL, nodes)


async def listen(redis_url: str, waiters: Waiters, on_revoked: Callable[[list[str]], None]) -> None:
    """Relay published node names to local waiters, and revocations to ``on_revoked``,
    reconnecting with backoff."""
    delay = 0.5
    while True:
        try:
            client = aioredis.Redis.from_url(redis_url)
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(CHANNEL, REVOKED_CHANNEL)
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    nodes = message["data"].decode().split("\n")
                    if message["channel"] == REVOKED_CHANNEL.encode():
                        on_revoked(nodes)
                    else:
                        waiters.wake(nodes)
        except asyncio.CancelledError:
            raise
        except (redis.RedisError, OSError) as error:
            log.warning(
                "assignment notifications unavailable (%s); retrying in %.1fs", error, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
