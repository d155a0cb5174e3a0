"""Garbage collection kept out of the agents' way.

An API process serving thousands of agents holds hundreds of thousands of objects (a
connection, a parser and a long-poll task per agent, the documents cache). CPython's
collector scans all of them in a full collection, and starts one whenever the objects
that survived since the last grow by a quarter: during a rollout, every second or two,
each stopping the event loop for 0.3 to 0.6 s at 10,000 agents, and every heartbeat
waiting in it. Most garbage here is freed by reference counting; the collector is for
cycles, which are few.

So, once the process has started: what exists is frozen (the modules, the app, the
schemas are never garbage), full collections no longer start on their own, young
collections go on as usual, and a full collection runs now and then when no rollout
is waking long-polls, timed on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from bpfleet_api import metrics

log = logging.getLogger(__name__)

FULL_COLLECTION_SECONDS = 600.0  # how often a full collection is due
QUIET_CHECK_SECONDS = 1.0
# A full collection starts when the collections of the middle generation since the last
# one exceed this; at CPython's 700 / 10 thresholds, that is never in a process's life.
NEVER = 1 << 30


def settle() -> None:
    """Freeze what exists now and stop automatic full collections (at the end of
    startup). Young and middle generations are collected as before."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


def collect() -> float:
    """One full collection; the seconds it held the process."""
    started = time.perf_counter()
    gc.collect()
    paused = time.perf_counter() - started
    metrics.FULL_COLLECTION_SECONDS.observe(paused)
    return paused


async def collect_when_quiet(
    quiet: Callable[[], bool],
    *,
    every: float = FULL_COLLECTION_SECONDS,
    check: float = QUIET_CHECK_SECONDS,
    full_collection: Callable[[], float] = collect,
) -> None:
    """Every ``every`` seconds, a full collection once ``quiet()`` says nothing is
    being paced through; at the latest ``every`` seconds after it was due, quiet or
    not, so that cycles never pile up without bound (a task for the app's life)."""
    while True:
        await asyncio.sleep(every)
        waited = 0.0
        while not quiet() and waited < every:
            await asyncio.sleep(check)
            waited += check
        paused = full_collection()
        if paused > 0.1:
            log.info("full garbage collection held the process %.0f ms", paused * 1000)
