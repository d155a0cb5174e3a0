"""The rollout state machine. Pure: the database state in, the next step out.

A rollout moves a program's selected nodes to a new generation in cumulative steps
(e.g. 1 node, 25%, 100%). Each step's nodes must all report an outcome; then the step
bakes; then the next begins. More failed nodes than the failure budget stops it, and
with automatic rollback the updated nodes return to the previous generation. Because
the next step is recomputed from the stored state every time, running the same
decision twice changes nothing: the tasks around it can be retried freely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import datetime

from bpfleet_api.models import RolloutPhase
from bpfleet_core.protocol import ProgramState
from bpfleet_core.resources import RolloutStrategy

SUCCEEDED_STATES = frozenset({ProgramState.ATTACHED, ProgramState.INCOMPATIBLE})
FAILED_STATES = frozenset(
    {
        ProgramState.LOAD_FAILED,
        ProgramState.ATTACH_FAILED,
        ProgramState.SIGNATURE_REJECTED,
        ProgramState.INVALID,
    }
)
FINAL_PHASES = frozenset(
    {
        RolloutPhase.SUCCEEDED,
        RolloutPhase.FAILED,
        RolloutPhase.ROLLED_BACK,
        RolloutPhase.ABORTED,
        RolloutPhase.SUPERSEDED,
    }
)


@dataclass(frozen=True)
class Progress:
    phase: RolloutPhase
    step: int
    updated_nodes: tuple[str, ...]
    step_settled_at: datetime | None = None
    step_started_at: datetime | None = None
    skipped_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    progress: Progress
    assign_new: tuple[str, ...] = ()  # nodes to move to the new generation now
    revert: tuple[str, ...] = ()  # nodes to return to the previous generation now
    message: str = ""
    wait_seconds: float | None = None  # when to decide again; None: nothing more to do


def step_targets(steps: Sequence[str], total: int) -> list[int]:
    """Cumulative node counts per step, never decreasing, the last one all nodes."""
    targets: list[int] = []
    for step in steps:
        wanted = math.ceil(total * int(step[:-1]) / 100) if step.endswith("%") else int(step)
        targets.append(max(min(wanted, total), targets[-1] if targets else 0))
    if not targets or targets[-1] < total:
        targets.append(total)
    return targets


def failed_nodes(
    strategy: RolloutStrategy, progress: Progress, outcomes: Mapping[str, ProgramState | None]
) -> list[str]:
    """Updated nodes that count against the failure budget: those that failed, and with
    ``unreachableNodes: Fail`` those given up on that have not reported since."""
    failed = [node for node in progress.updated_nodes if outcomes.get(node) in FAILED_STATES]
    if strategy.unreachable_nodes == "Fail":
        failed += [node for node in progress.skipped_nodes if outcomes.get(node) is None]
    return sorted(failed)


def decide(  # noqa: PLR0917 - the state, the strategy, the world, the clock
    progress: Progress,
    strategy: RolloutStrategy,
    selected: Sequence[str],
    outcomes: Mapping[str, ProgramState | None],
    now: datetime,
    tick_seconds: float,
    unreachable: AbstractSet[str] = frozenset(),
) -> Decision:
    """The next step of a rollout. ``outcomes`` holds each node's state for the new
    generation (None until the node has applied it); ``unreachable`` the nodes that
    stopped heartbeating. Linear in the nodes: membership is tested in sets."""
    if progress.phase in FINAL_PHASES or progress.phase == RolloutPhase.PAUSED:
        return Decision(progress)
    updated = progress.updated_nodes
    failed = failed_nodes(strategy, progress, outcomes)
    if len(failed) > strategy.failure_budget:
        message = (
            f"{len(failed)} node(s) failed ({', '.join(failed[:5])}), "
            f"over the failure budget of {strategy.failure_budget}"
        )
        if strategy.auto_rollback:
            return Decision(
                replace(progress, phase=RolloutPhase.ROLLED_BACK),
                revert=updated,
                message=f"{message}; rolled back {len(updated)} node(s)",
            )
        return Decision(replace(progress, phase=RolloutPhase.FAILED), message=message)

    targets = step_targets(strategy.steps, len(selected))
    step = min(progress.step, len(targets) - 1)
    done = set(updated)
    # Reachable nodes first: a step is not spent on nodes that stopped heartbeating.
    missing = [node for node in selected if node not in done and node not in unreachable]
    missing += [node for node in selected if node not in done and node in unreachable]
    to_add = tuple(missing[: max(targets[step] - len(updated), 0)])
    if to_add:
        return Decision(
            Progress(
                RolloutPhase.PROGRESSING,
                step,
                updated + to_add,
                step_started_at=now,
                skipped_nodes=progress.skipped_nodes,
            ),
            assign_new=to_add,
            message=f"step {step + 1}/{len(targets)}: updating {len(to_add)} node(s)",
            wait_seconds=tick_seconds,
        )
    skipped = set(progress.skipped_nodes)
    pending = [node for node in updated if outcomes.get(node) is None and node not in skipped]
    if pending:
        started = progress.step_started_at or now
        overdue = (now - started).total_seconds() >= strategy.progress_deadline_seconds
        given_up = tuple(node for node in pending if node in unreachable) if overdue else ()
        if given_up:
            more = replace(
                progress,
                step=step,
                step_started_at=started,
                skipped_nodes=progress.skipped_nodes + given_up,
            )
            verb = "skipped" if strategy.unreachable_nodes == "Skip" else "counted as failed"
            decision = decide(more, strategy, selected, outcomes, now, tick_seconds, unreachable)
            note = (
                f"progress deadline passed: {len(given_up)} unreachable node(s) {verb} "
                f"({', '.join(sorted(given_up)[:5])})"
            )
            return replace(decision, message=f"{note}; {decision.message}".rstrip("; "))
        waiting = f"step {step + 1}/{len(targets)}: waiting for {len(pending)} node(s)"
        if overdue:
            waiting += " (past the progress deadline; they still heartbeat)"
        return Decision(
            replace(progress, phase=RolloutPhase.PROGRESSING, step=step, step_started_at=started),
            message=waiting,
            wait_seconds=tick_seconds,
        )
    if step == len(targets) - 1:
        applied = len(updated) - len(skipped)
        note = f", {len(skipped)} unreachable node(s) skipped" if skipped else ""
        return Decision(
            replace(progress, phase=RolloutPhase.SUCCEEDED, step=step),
            message=f"all {applied} node(s) updated{note}",
        )
    settled_at = progress.step_settled_at or now
    remaining = strategy.bake_seconds - (now - settled_at).total_seconds()
    if remaining > 0:
        return Decision(
            replace(progress, phase=RolloutPhase.BAKING, step=step, step_settled_at=settled_at),
            message=f"step {step + 1}/{len(targets)}: baking {remaining:.0f}s more",
            wait_seconds=min(remaining, max(tick_seconds, remaining)),
        )
    following = replace(
        progress, phase=RolloutPhase.PROGRESSING, step=step + 1, step_settled_at=None
    )
    return decide(following, strategy, selected, outcomes, now, tick_seconds, unreachable)


# ------------------------------------------------------------------ for people


@dataclass(frozen=True)
class StepView:
    label: str
    target: int
    state: str  # done, current or waiting


@dataclass(frozen=True)
class ProgressView:
    steps: tuple[StepView, ...]
    bake_remaining_seconds: float | None
    failures: int


def describe(
    strategy: RolloutStrategy,
    progress: Progress,
    selected: int,
    outcomes: Mapping[str, ProgramState | None],
    now: datetime,
) -> ProgressView:
    """A rollout as a person follows it: its steps (with the implicit last one when the
    strategy stops short of every node), which is current, the bake left, and how many
    updated nodes count against the failure budget."""
    targets = step_targets(strategy.steps, selected)
    labels = [*strategy.steps, "100%"][: len(targets)]
    finished = progress.phase == RolloutPhase.SUCCEEDED
    current = min(progress.step, len(targets) - 1)
    steps = tuple(
        StepView(
            label,
            target,
            "done"
            if finished or index < current
            else "current"
            if index == current and progress.phase not in FINAL_PHASES
            else "waiting",
        )
        for index, (label, target) in enumerate(zip(labels, targets, strict=True))
    )
    remaining = None
    if progress.phase == RolloutPhase.BAKING and progress.step_settled_at is not None:
        elapsed = (now - progress.step_settled_at).total_seconds()
        remaining = max(strategy.bake_seconds - elapsed, 0.0)
    return ProgressView(steps, remaining, len(failed_nodes(strategy, progress, outcomes)))
