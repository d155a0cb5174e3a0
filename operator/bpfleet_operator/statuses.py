"""Summary status for the custom resources, from what the fleet API reports (pure).

Conditions follow kstatus, so ``kubectl wait --for=condition=Ready`` and the health
checks of Flux and Argo CD read them: ``Ready``, plus ``Reconciling`` while work is
under way and ``Stalled`` when it cannot go on without a person. A condition keeps its
``lastTransitionTime`` until its status really changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from bpfleet_core.resources import (
    BpfProgramStatus,
    Condition,
    ConditionType,
    NetworkPolicyStatus,
    PolicyCounts,
    ProgramCounts,
)

Truth = Literal["True", "False", "Unknown"]
_ACTIVE_PHASES = {"Progressing", "Baking"}
_STOPPED_PHASES = {"Failed", "RolledBack", "Aborted"}


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    previous: Iterable[Condition],
    now: datetime,
    generation: int | None,
    *,
    ready: tuple[Truth, str, str],
    reconciling: tuple[str, str] | None = None,
    stalled: tuple[str, str] | None = None,
) -> tuple[Condition, ...]:
    """Ready always; Reconciling and Stalled only while they are true (kstatus style)."""
    before = {condition.type: condition for condition in previous}

    def make(kind: ConditionType, status: Truth, reason: str, message: str) -> Condition:
        old = before.get(kind)
        since = old.last_transition_time if old and old.status == status else timestamp(now)
        return Condition(
            type=kind,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=since,
            observed_generation=generation,
        )

    found = [make(ConditionType.READY, *ready)]
    if reconciling is not None:
        found.append(make(ConditionType.RECONCILING, "True", *reconciling))
    if stalled is not None:
        found.append(make(ConditionType.STALLED, "True", *stalled))
    return tuple(found)


def progressing(
    previous: Iterable[Condition],
    now: datetime,
    generation: int | None,
    message: str,
    *,
    ready: Truth = "False",
) -> tuple[Condition, ...]:
    """Work under way: nodes taking a change in (Ready False), or a change just handed to
    the fleet that no node has reported on yet (Ready Unknown)."""
    return conditions(
        previous,
        now,
        generation,
        ready=(ready, "Progressing", message),
        reconciling=("Progressing", message),
    )


def stalled(
    previous: Iterable[Condition], now: datetime, generation: int | None, reason: str, message: str
) -> tuple[Condition, ...]:
    return conditions(
        previous, now, generation, ready=("False", reason, message), stalled=(reason, message)
    )


def program_status(
    view: Mapping[str, Any],
    previous: BpfProgramStatus,
    now: datetime,
    generation: int | None,
    revision: str,
) -> BpfProgramStatus:
    """The BpfProgram status for the fleet's ``ProgramView`` of it."""
    summary = view["summary"]
    counts = ProgramCounts.model_validate(summary)
    rollout = view.get("rollout") or {}
    phase = rollout.get("phase") if rollout.get("toGeneration") == view["generation"] else None
    progress = f"{counts.attached}/{counts.desired} attached"
    if counts.incompatible:
        progress += f", {counts.incompatible} incompatible"
    if counts.failed:
        progress += f", {counts.failed} failed"
    old = previous.conditions
    if view.get("killed"):
        found = stalled(old, now, generation, "Killed", "kill switch: detached on every node")
    elif phase in _STOPPED_PHASES:
        message = f"rollout {phase}: {rollout.get('message') or progress}"
        found = stalled(old, now, generation, f"Rollout{phase}", message)
    elif phase == "Paused":
        found = conditions(
            old, now, generation, ready=("False", "RolloutPaused", f"rollout paused; {progress}")
        )
    elif phase in _ACTIVE_PHASES or counts.pending:
        step = f"rollout step {rollout.get('step', 0) + 1}, " if phase else ""
        found = progressing(old, now, generation, f"{step}{progress}")
    elif counts.failed:
        found = stalled(old, now, generation, "NodesFailed", progress)
    elif counts.desired == 0:
        found = conditions(
            old, now, generation, ready=("True", "NoNodesSelected", "no node matches")
        )
    else:
        found = conditions(old, now, generation, ready=("True", "Attached", progress))
    return BpfProgramStatus(
        observed_generation=generation,
        conditions=found,
        revision=revision,
        ready=f"{counts.attached}/{counts.desired}",
        counts=counts,
        api_generation=view["generation"],
    )


def policy_status(
    view: Mapping[str, Any],
    previous: NetworkPolicyStatus,
    now: datetime,
    generation: int | None,
    revision: str,
) -> NetworkPolicyStatus:
    """The NetworkPolicy status for the fleet's ``PolicyView`` of it."""
    counts = PolicyCounts.model_validate(view["summary"])
    progress = f"{counts.enforcing}/{counts.desired} nodes enforcing"
    old = previous.conditions
    if counts.failed:
        found = stalled(
            old, now, generation, "EnforcementFailed", f"{progress}, {counts.failed} failed"
        )
    elif counts.enforcing < counts.desired:
        found = progressing(old, now, generation, progress)
    else:
        found = conditions(old, now, generation, ready=("True", "Enforcing", progress))
    return NetworkPolicyStatus(
        observed_generation=generation,
        conditions=found,
        revision=revision,
        ready=f"{counts.enforcing}/{counts.desired}",
        counts=counts,
        api_generation=view["generation"],
    )
