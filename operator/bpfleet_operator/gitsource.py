"""One GitSource pass: fetch -> validate every manifest -> apply all, prune, or keep the
last good revision.

The same pass runs in a cluster (the target is the Kubernetes API: objects the
handlers then hand to the fleet) and standalone (the target is the fleet API itself).
A revision with any invalid manifest applies nothing; the last good revision stays in
force and the status names each problem's file, line and field.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from bpfleet_core import bundles
from bpfleet_core.netpol.validating import Problem
from bpfleet_core.resources import (
    GitSourceSpec,
    GitSourceStatus,
    HistoryEntry,
    InventoryEntry,
    SourceError,
)
from bpfleet_operator import git, statuses
from bpfleet_operator.statuses import timestamp

HISTORY_LENGTH = 5
MAX_ERRORS = 20  # a status is no place for thousands of lines; the first ones tell enough

Document = bundles.ProgramDocument | bundles.PolicyDocument
Outcome = Literal["Applied", "Rejected", "Failed", "Suspended"]


class TargetError(Exception):
    """Applying to the target failed; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Target(Protocol):
    """Where a revision's documents go."""

    def apply(self, document: Document, revision: str, source: str) -> bool:
        """Create or correct the object; True if anything changed."""

    def delete(self, entry: InventoryEntry, source: str) -> None:
        """Delete it (absent already is fine)."""


@dataclass(frozen=True)
class Result:
    status: GitSourceStatus
    outcome: Outcome
    message: str
    changed: int = 0
    pruned: int = 0


def plan_prune(
    previous: tuple[InventoryEntry, ...], current: tuple[InventoryEntry, ...]
) -> list[InventoryEntry]:
    """What was applied from Git before and is gone from it now."""
    keep = {entry.key for entry in current}
    return [entry for entry in previous if entry.key not in keep]


def source_errors(problems: tuple[Problem, ...]) -> tuple[SourceError, ...]:
    return tuple(
        SourceError(
            file=p.file or "", line=p.line, field=p.path if p.loc else "", message=p.message
        )
        for p in problems[:MAX_ERRORS]
    )


def _history(status: GitSourceStatus, entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
    newest = status.history[0] if status.history else None
    if newest and (newest.revision, newest.result, newest.message) == (
        entry.revision,
        entry.result,
        entry.message,
    ):
        return status.history  # the same outcome again: no churn in the status
    return (entry, *status.history)[:HISTORY_LENGTH]


def reconcile(
    spec: GitSourceSpec,
    status: GitSourceStatus,
    checkout: git.Checkout,
    target: Target,
    *,
    source: str,
    now: datetime,
    generation: int | None = None,
    check_program: bundles.ProgramCheck | None = None,
) -> Result:
    """One pass; never raises for Git, validation or target failures (they are the result)."""
    conditions = status.conditions

    def finish(
        outcome: Outcome,
        message: str,
        ready: tuple[statuses.Truth, str, str],
        *,
        stalled: tuple[str, str] | None = None,
        changes: dict[str, object] | None = None,
    ) -> Result:
        found = statuses.conditions(conditions, now, generation, ready=ready, stalled=stalled)
        updated = status.model_copy(
            update={"conditions": found, "observed_generation": generation, **(changes or {})}
        )
        return Result(updated, outcome, message)

    if spec.suspend:
        return finish("Suspended", "suspended", ("False", "Suspended", "suspended: not fetching"))
    try:
        revision = checkout.fetch(spec.ref)
    except git.GitError as error:
        message = f"fetch failed: {error}"
        return finish("Failed", message, ("False", "FetchFailed", message))
    name = str(revision)
    attempted: dict[str, object] = {
        "last_fetched_revision": name,
        "last_attempted_revision": name,
    }

    def rejected(reason: str, message: str, errors: tuple[SourceError, ...]) -> Result:
        entry = HistoryEntry(revision=name, time=timestamp(now), result="Rejected", message=message)
        kept = f"{message}; {status.last_applied_revision or 'nothing'} stays applied"
        result = finish(
            "Rejected",
            kept,
            ("False", reason, kept),
            stalled=(reason, kept),
            changes={**attempted, "errors": errors, "history": _history(status, entry)},
        )
        _correct_drift(status, spec.path, checkout, target, source)
        return result

    try:
        if spec.trusted_signing_keys:
            checkout.verify(revision.commit, spec.trusted_signing_keys)
        files = checkout.files(revision.commit, spec.path)
    except git.GitError as error:
        reason = "UntrustedRevision" if spec.trusted_signing_keys else "ReadFailed"
        return rejected(reason, str(error), (SourceError(file="", message=str(error)),))
    manifests = {path: files[path] for path in bundles.manifest_files(list(files), spec.path)}
    # The revision in force passed the fleet's checks when it was applied; a pass that
    # only corrects drift need not ask again.
    checked = None if name == status.last_applied_revision else check_program
    bundle = bundles.load(manifests, checked)
    if not bundle.valid:
        count = len(bundle.problems)
        first = bundle.problems[0]
        message = f"{count} invalid manifest field(s), first {first}"
        return rejected("ValidationFailed", message, source_errors(bundle.problems))

    changed = pruned = 0
    previous = status.inventory
    try:
        for document in bundle.documents():
            changed += target.apply(document, name, source)
        if spec.prune:
            for gone in plan_prune(previous, bundle.inventory()):
                target.delete(gone, source)
                pruned += 1
    except TargetError as error:
        message = f"applying {name} failed: {error}"
        failed = HistoryEntry(revision=name, time=timestamp(now), result="Failed", message=message)
        # Keep everything that may still exist in the inventory, so a later pass prunes it.
        merged = {item.key: item for item in (*previous, *bundle.inventory())}
        return finish(
            "Failed",
            message,
            ("False", "ApplyFailed", message),
            stalled=("ApplyFailed", message) if error.permanent else None,
            changes={
                **attempted,
                "history": _history(status, failed),
                "inventory": tuple(merged[key] for key in sorted(merged)),
            },
        )
    summary = (
        f"applied {name}: {len(bundle.programs)} program(s), {len(bundle.policies)} policy(ies)"
    )
    applied = HistoryEntry(revision=name, time=timestamp(now), result="Applied", message=summary)
    result = finish(
        "Applied",
        summary,
        ("True", "Succeeded", summary),
        changes={
            **attempted,
            "errors": (),
            "history": _history(status, applied),
            "inventory": bundle.inventory(),
            "last_applied_revision": name,
        },
    )
    return Result(result.status, "Applied", summary, changed, pruned)


def _correct_drift(
    status: GitSourceStatus, root: str, checkout: git.Checkout, target: Target, source: str
) -> None:
    """With a new revision rejected, the last good one still holds: put it back where it
    was changed by hand. Best effort: a failure here changes no status."""
    last = status.last_applied_revision
    if not last or "@sha1:" not in last:
        return
    commit = last.rpartition("@sha1:")[2]
    try:
        files = checkout.files(commit, root)
    except git.GitError:
        return
    bundle = bundles.load({p: files[p] for p in bundles.manifest_files(list(files), root)})
    inventory = {entry.key for entry in status.inventory}
    with contextlib.suppress(TargetError):
        for document in bundle.documents():
            if document.entry.key in inventory:
                target.apply(document, last, source)
