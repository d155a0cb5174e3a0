"""Garbage collection in an API process: no full collection on its own once started,
one now and then when no change is being delivered, cycles collected all the same."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import weakref

from bpfleet_api import heap, metrics

# Objects that survive young collections, as connections and long-polls do during a
# rollout: each growth by a quarter of the old ones would start a full collection.
CHURN = """
import gc, json, sys
sys.path[:0] = {path!r}
from bpfleet_api import heap, metrics
if {settle!r}:
    heap.settle()
before = [stats["collections"] for stats in gc.get_stats()]
kept = []
for round in range(30):
    kept.append([[round, i] for i in range(20_000)])
after = [stats["collections"] for stats in gc.get_stats()]
print(json.dumps([a - b for a, b in zip(after, before)]))
"""


def _collections_while_growing(*, settle: bool) -> list[int]:
    script = CHURN.format(path=sys.path, settle=settle)
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    counts: list[int] = json.loads(output)
    return counts


def test_a_settled_process_makes_no_full_collection_on_its_own() -> None:
    young, _middle, full = _collections_while_growing(settle=True)
    assert full == 0
    assert young > 0  # young collections go on as before
    # the same growth in a process left as CPython starts it does collect in full
    assert _collections_while_growing(settle=False)[2] > 0


def _full_collections_timed() -> float:
    return next(
        sample.value
        for family in metrics.FULL_COLLECTION_SECONDS.collect()
        for sample in family.samples
        if sample.name.endswith("_count")
    )


def test_a_full_collection_frees_cycles_and_is_timed() -> None:
    class Node:
        partner: object = None

    first, second = Node(), Node()
    first.partner, second.partner = second, first
    gone = weakref.ref(first)
    del first, second
    timed = _full_collections_timed()
    assert heap.collect() >= 0
    assert gone() is None
    assert _full_collections_timed() == timed + 1


def _run_collector(quiet_after: int | None, ticks: int) -> list[int]:
    """Drive ``collect_when_quiet`` for ``ticks`` quiet-checks; quiet from check number
    ``quiet_after`` on (never when None). Returns the checks at which it collected."""
    checks = 0
    collected: list[int] = []

    def quiet() -> bool:
        nonlocal checks
        checks += 1
        return quiet_after is not None and checks >= quiet_after

    def full_collection() -> float:
        collected.append(checks)
        return 0.0

    async def drive() -> None:
        task = asyncio.create_task(
            heap.collect_when_quiet(quiet, every=0.05, check=0.001, full_collection=full_collection)
        )
        while checks < ticks:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(drive())
    return collected


def test_a_due_full_collection_waits_until_nothing_is_being_delivered() -> None:
    collected = _run_collector(quiet_after=5, ticks=8)
    assert collected
    assert collected[0] >= 5  # not while wake-ups were queued


def test_a_full_collection_is_not_put_off_for_ever() -> None:
    """Changes delivered without end: the collection runs anyway, a period late."""
    collected = _run_collector(quiet_after=None, ticks=60)
    assert collected  # every=0.05 s, check=0.001 s: at most 50 checks late


def test_settling_leaves_young_collections_as_they_were() -> None:
    young, middle, full = gc.get_threshold()
    script = (
        f"import gc, sys; sys.path[:0] = {sys.path!r}; from bpfleet_api import heap; "
        "heap.settle(); print(*gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert output[:2] == [str(young), str(middle)]
    assert int(output[2]) == heap.NEVER != full
    assert output[3] == "True"  # what existed at start-up is frozen
