"""Waking agents' long-polls when their assignments change, across processes.

The only module that talks to Redis directly (Celery has its own connection). Redis
carries node names only; a lost message costs latency, never state: waiters re-check
the database every few seconds anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL = "bpfleet:assignments"


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


def publish(redis_url: str, nodes: Iterable[str]) -> None:
    """Tell every API process; failure only delays agents until their next re-check."""
    names = sorted(set(nodes))
    if not names:
        return
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(CHANNEL, "\n".join(names))
        finally:
            client.close()
    except redis.RedisError as error:
        log.warning("could not publish assignment changes: %s", error)


async def listen(redis_url: str, waiters: Waiters) -> None:
    """Relay published node names to local waiters, reconnecting with backoff."""
    delay = 0.5
    while True:
        try:
            client = aioredis.Redis.from_url(redis_url)
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(CHANNEL)
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        waiters.wake(message["data"].decode().split("\n"))
        except asyncio.CancelledError:
            raise
        except (redis.RedisError, OSError) as error:
            log.warning(
                "assignment notifications unavailable (%s); retrying in %.1fs", error, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
