"""Wake-ups after a change are paced by how far the API's event loop falls behind:
gently at first, faster while it keeps up, halved when it lags."""

from __future__ import annotations

import asyncio
import time

from bpfleet_api.notify import Waiters, WakeRate


def test_the_rate_grows_while_the_loop_keeps_up_and_halves_when_it_lags() -> None:
    rate = WakeRate(200, floor=5, lag_target=0.02)
    assert rate.batch == 5  # a change starts gently
    for _ in range(100):
        rate.observe(0.001)
    assert rate.batch == 200  # and never past the ceiling
    rate.observe(0.1)
    assert rate.batch == 100
    for _ in range(10):
        rate.observe(0.1)
    assert rate.batch == 5  # never below the floor
    rate.observe(0.0)
    assert rate.batch == 15  # additive: a twentieth of the ceiling per tick
    rate.idle()
    assert rate.batch == 5


def test_a_ceiling_below_the_floor_wins() -> None:
    rate = WakeRate(2, floor=5)
    assert rate.batch == 2
    rate.observe(0.0)
    assert rate.batch == 2


def _woken_per_batch(*, stall_after_first: float, nodes: int = 300) -> list[int]:
    """Wake ``nodes`` waiting long-polls; how many each of the pacer's batches let
    through. ``stall_after_first``: seconds the loop is held, as a burst of requests
    would hold it, right after the first batch."""
    batches: list[int] = []

    async def scenario() -> None:
        waiters = Waiters(per_second=4000)  # at most 200 per 50 ms batch

        async def prepare(batch: list[str]) -> None:
            batches.append(len(batch))

        waiters.bind(asyncio.get_running_loop(), prepare)
        pacer = asyncio.create_task(waiters.pace())
        waits = [asyncio.create_task(waiters.wait(f"n{i}", 30)) for i in range(nodes)]
        await asyncio.sleep(0)
        waiters.wake(f"n{i}" for i in range(nodes))
        while not batches:
            await asyncio.sleep(0)
        # The pacer is asleep until its next tick: hold the loop past it.
        time.sleep(stall_after_first)
        await asyncio.gather(*waits)
        assert all(w.result() for w in waits)  # every long-poll woken
        assert not waiters.pacing
        pacer.cancel()

    asyncio.run(scenario())
    return batches


def test_a_change_is_delivered_gently_first() -> None:
    batches = _woken_per_batch(stall_after_first=0.0)
    assert batches[0] == 5
    assert sum(batches) == 300


def test_a_loop_that_fell_behind_gets_no_more_wake_ups_at_a_time() -> None:
    """The tick after the first batch comes 150 ms late: the next batch does not grow
    (without the stall it would be 15)."""
    batches = _woken_per_batch(stall_after_first=0.2)
    assert batches[:2] == [5, 5]
    assert sum(batches) == 300
