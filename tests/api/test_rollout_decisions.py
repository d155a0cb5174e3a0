"""The rollout state machine on its own (pure): nodes that stopped heartbeating are
chosen last, a step waits for them until its progress deadline, then skips them or
counts them against the failure budget, as the strategy says; and deciding over ten
thousand nodes stays linear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bpfleet_api.models import RolloutPhase
from bpfleet_api.rollouts import Progress, decide

from bpfleet_core.protocol import ProgramState
from bpfleet_core.resources import RolloutStrategy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NODES = ("a", "b", "c")


def strategy(**fields: object) -> RolloutStrategy:
    return RolloutStrategy.model_validate(
        {"steps": ["1", "100%"], "progressDeadlineSeconds": 60, **fields}
    )


def test_unreachable_nodes_are_chosen_last() -> None:
    start = Progress(RolloutPhase.PROGRESSING, 0, ())
    first = decide(start, strategy(), NODES, {}, NOW, 1.0, unreachable={"a"})
    assert first.assign_new == ("b",)
    assert first.progress.step_started_at == NOW


def _waiting_on_c(unreachable_nodes: str) -> tuple[Progress, RolloutStrategy]:
    """Step two assigned to b and c a while ago; b reported, c did not."""
    progress = Progress(
        RolloutPhase.PROGRESSING, 1, NODES, step_started_at=NOW - timedelta(seconds=61)
    )
    return progress, strategy(unreachableNodes=unreachable_nodes)


OUTCOMES = {"a": ProgramState.ATTACHED, "b": ProgramState.ATTACHED}


def test_before_the_deadline_an_unreachable_node_is_waited_for() -> None:
    early = Progress(RolloutPhase.PROGRESSING, 1, NODES, step_started_at=NOW)
    decision = decide(early, strategy(), NODES, OUTCOMES, NOW, 1.0, unreachable={"c"})
    assert decision.progress.phase == RolloutPhase.PROGRESSING
    assert "waiting for 1 node(s)" in decision.message


def test_past_the_deadline_an_unreachable_node_is_skipped() -> None:
    progress, skip = _waiting_on_c("Skip")
    decision = decide(progress, skip, NODES, OUTCOMES, NOW, 1.0, unreachable={"c"})
    assert decision.progress.phase == RolloutPhase.SUCCEEDED
    assert decision.progress.skipped_nodes == ("c",)
    assert "1 unreachable node(s) skipped (c)" in decision.message


def test_past_the_deadline_a_node_still_heartbeating_is_waited_for() -> None:
    progress, skip = _waiting_on_c("Skip")
    decision = decide(progress, skip, NODES, OUTCOMES, NOW, 1.0, unreachable=set())
    assert decision.progress.phase == RolloutPhase.PROGRESSING
    assert "past the progress deadline; they still heartbeat" in decision.message


def test_past_the_deadline_an_unreachable_node_can_count_as_failed() -> None:
    progress, fail = _waiting_on_c("Fail")
    decision = decide(progress, fail, NODES, OUTCOMES, NOW, 1.0, unreachable={"c"})
    assert decision.progress.phase == RolloutPhase.ROLLED_BACK
    assert decision.revert == NODES
    assert "over the failure budget of 0" in decision.message

    tolerant = fail.model_copy(update={"failure_budget": 1})
    decision = decide(progress, tolerant, NODES, OUTCOMES, NOW, 1.0, unreachable={"c"})
    assert decision.progress.phase == RolloutPhase.SUCCEEDED


def test_ten_thousand_nodes_are_decided_in_one_pass() -> None:
    """Membership in sets: the last step over 10,000 updated nodes decides at once (a
    tuple scan per node took seconds)."""
    nodes = tuple(f"node-{index:05d}" for index in range(10_000))
    progress = Progress(RolloutPhase.PROGRESSING, 1, nodes[:2500], step_started_at=NOW)
    outcomes = dict.fromkeys(nodes[:2500], ProgramState.ATTACHED)
    decision = decide(progress, strategy(steps=["1", "25%", "100%"]), nodes, outcomes, NOW, 1.0)
    assert len(decision.assign_new) == 7500
    done = Progress(RolloutPhase.PROGRESSING, 2, nodes, step_started_at=NOW)
    every = dict.fromkeys(nodes, ProgramState.ATTACHED)
    final = decide(done, strategy(steps=["1", "25%", "100%"]), nodes, every, NOW, 1.0)
    assert final.progress.phase == RolloutPhase.SUCCEEDED
