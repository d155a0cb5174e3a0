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
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL = "bpfleet:assignments"
REVOKED_CHANNEL = "bpfleet:revoked-nodes"


class WakeRate:
    """How many wake-ups the next batch may carry: additive increase, multiplicative
    decrease on the event loop's lag, as TCP paces a connection on loss.

    Each woken long-poll brings its agent back for its files and its report: a batch
    that outruns the process queues everything behind it, heartbeats included. The lag
    of the pacer's own short sleep shows that queue; over ``lag_target`` the batch is
    halved, under it the batch grows by a twentieth of ``ceiling``. After the queue ran
    dry the next change starts again from ``floor``.
    """

    def __init__(self, ceiling: int, *, floor: int = 5, lag_target: float = 0.02) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = min(max(1, floor), self.ceiling)
        self.lag_target = lag_target
        self.step = max(1, self.ceiling // 20)
        self.batch = self.floor

    def observe(self, lag: float) -> None:
        """The loop answered the pacer's tick ``lag`` seconds late."""
        if lag > self.lag_target:
            self.batch = max(self.floor, self.batch // 2)
        else:
            self.batch = min(self.ceiling, self.batch + self.step)

    def idle(self) -> None:
        """Nothing queued: the next change starts gently again."""
        self.batch = self.floor


class Waiters:
    """In-process: the long-polls waiting per node, woken from any thread.

    Wake-ups are paced: names queue up, and a pacer lets them through in batches every
    ``PACE_SECONDS``, at most ``per_second`` and fewer when the event loop falls behind
    (``WakeRate``), first handing each batch to ``prepare`` (which reads what the woken
    long-polls will answer, for the whole batch at once). A step that moves ten thousand
    nodes so never resumes ten thousand coroutines at once, nor more than the process
    keeps up with.
    """

    PACE_SECONDS = 0.05

    def __init__(self, per_second: float) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued: deque[str] = deque()
        self._queued_names: set[str] = set()  # each node queued once
        self._queued_any = asyncio.Event()
        self.rate = WakeRate(int(per_second * self.PACE_SECONDS))
        self._prepare: Callable[[list[str]], Awaitable[None]] | None = None

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        prepare: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._loop, self._prepare = loop, prepare

    async def wait(self, node: str, timeout: float) -> bool:
        """Wait until ``node`` is woken (True) or ``timeout`` passes (False)."""
        event = asyncio.Event()
        self._events[node].add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._events[node].discard(event)
            if not self._events[node]:
                del self._events[node]
        return event.is_set()

    def waiting(self, node: str) -> bool:
        return node in self._events

    def wake(self, nodes: Iterable[str]) -> None:
        """Queue wake-ups (from any thread); the pacer delivers them."""
        loop = self._loop
        if loop is None:
            return
        names = list(nodes)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._enqueue, names)

    def _enqueue(self, nodes: list[str]) -> None:
        for node in nodes:
            if node not in self._queued_names:
                self._queued_names.add(node)
                self._queued.append(node)
        if self._queued:
            self._queued_any.set()

    async def pace(self) -> None:
        """Deliver queued wake-ups, a batch per tick (run as a task for the app's life)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._queued_any.is_set():
                self.rate.idle()
                await self._queued_any.wait()
            batch: list[str] = []
            while self._queued and len(batch) < self.rate.batch:
                node = self._queued.popleft()
                self._queued_names.discard(node)
                batch.append(node)
            if not self._queued:
                self._queued_any.clear()
            if self._prepare is not None and batch:
                try:
                    await self._prepare(batch)
                except Exception:
                    log.exception("could not prepare answers for %d woken node(s)", len(batch))
            for node in batch:
                for event in self._events.get(node, ()):
                    event.set()
            if self._queued:
                due = loop.time() + self.PACE_SECONDS
                await asyncio.sleep(self.PACE_SECONDS)
                self.rate.observe(loop.time() - due)

    @property
    def pacing(self) -> bool:
        """Wake-ups are queued: a change is being delivered."""
        return bool(self._queued)

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


# ------------------------------------------------------------------------ leadership

LEADER_KEY = "bpfleet:leader"
# Take the lease if free, or renew it if ours: one round trip, atomic.
_TAKE_OR_RENEW = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class LeaderLease:
    """A lease in Redis that one API process of all holds at a time: the fleet-wide loops
    (the rollout sweeper) run there only. Lost with Redis, or when not renewed within
    ``ttl_seconds`` (a process that died), and taken over then."""

    def __init__(self, redis_url: str, ttl_seconds: float = 10.0) -> None:
        self._client = aioredis.Redis.from_url(
            redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        self._identity = uuid.uuid4().hex
        self._ttl_ms = int(ttl_seconds * 1000)

    async def held(self) -> bool:
        """Take or renew the lease; whether this process holds it now."""
        try:
            taken = await self._client.eval(
                _TAKE_OR_RENEW, 1, LEADER_KEY, self._identity, str(self._ttl_ms)
            )
        except (redis.RedisError, OSError) as error:
            log.debug("leader lease unavailable: %s", error)
            return False
        return bool(taken)

    async def release(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            if await self._client.get(LEADER_KEY) == self._identity.encode():
                await self._client.delete(LEADER_KEY)
        await self._client.aclose()
