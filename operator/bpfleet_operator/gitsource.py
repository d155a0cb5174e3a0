"""One GitSource pass: fetch -> verify -> validate -> apply and prune, or keep the last
good revision.

The same pass runs in a cluster (the target is the Kubernetes API: objects the
handlers then hand to the fleet) and standalone (the target is the fleet API itself).
A revision with any invalid manifest applies nothing; the last good revision stays in
force and the status names each problem's file, line and field.

Each step is a method of ``_Pass`` that returns what the next step needs or stops the
pass with its result (Flux's source-controller runs its sub-reconcilers the same way).
A ``Scope`` says where a source's documents may go: in a cluster, a GitSource outside
the namespaces trusted with the whole cluster applies NetworkPolicies in its own
namespace only, and no BpfProgram (they are cluster-scoped and load code on nodes).

``follow`` is the loop around passes that the kopf daemon and the standalone runner
share: every interval, sooner with backoff after a failure.

A pass's result also carries the text of the files the policy editor opens
(``source_files``): those holding policies of an applied revision, and those a
rejected revision's errors name; the operator is the only Git client, so it ships them
with its report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, NoReturn, Protocol

from bpfleet_core import bundles, failures
from bpfleet_core.netpol.validating import Problem
from bpfleet_core.resources import (
    SOURCE_FILES_MAX,
    SOURCE_FILES_MAX_BYTES,
    GitSourceSpec,
    GitSourceStatus,
    HistoryEntry,
    InventoryEntry,
    SourceError,
    SourceFile,
)
from bpfleet_operator import git, statuses
from bpfleet_operator.statuses import timestamp

HISTORY_LENGTH = 5
MAX_ERRORS = 20  # a status is no place for thousands of lines; the first ones tell enough

Document = bundles.ProgramDocument | bundles.PolicyDocument
Outcome = Literal["Applied", "Rejected", "Failed", "Suspended"]


class Target(Protocol):
    """Where a revision's documents go. Both methods raise ``failures.Failure``:
    temporary (retry later) or permanent (the document or the cluster must change)."""

    def apply(self, document: Document, revision: str, source: str) -> bool:
        """Create or correct the object; True if anything changed."""

    def delete(self, entry: InventoryEntry, source: str) -> None:
        """Delete it if ``source`` owns it (absent already is fine)."""


@dataclass(frozen=True)
class Scope:
    """Where a source's documents may go. ``namespace`` None: anywhere, cluster-scoped
    BpfPrograms included; otherwise NetworkPolicies in that namespace only."""

    namespace: str | None = None

    def refusals(self, documents: tuple[Document, ...]) -> list[Problem]:
        if self.namespace is None:
            return []
        found = []
        for document in documents:
            file, _, line = document.origin.rpartition(":")
            if isinstance(document, bundles.ProgramDocument):
                message = (
                    f"BpfProgram {document.name} is cluster-scoped: a GitSource in namespace "
                    f"{self.namespace} may apply NetworkPolicies of {self.namespace} only"
                )
                found.append(Problem(("kind",), message, file=file, line=int(line)))
            elif document.policy.metadata.namespace != self.namespace:
                message = (
                    f"a GitSource in namespace {self.namespace} may apply NetworkPolicies of "
                    f"{self.namespace} only, not of {document.policy.metadata.namespace}"
                )
                found.append(Problem(("metadata", "namespace"), message, file=file, line=int(line)))
        return found

    def allows(self, document: Document) -> bool:
        return not self.refusals((document,))


ANYWHERE = Scope()


@dataclass(frozen=True)
class Result:
    status: GitSourceStatus
    outcome: Outcome
    message: str
    changed: int = 0
    pruned: int = 0
    files: tuple[SourceFile, ...] = ()


def plan_prune(
    previous: tuple[InventoryEntry, ...], current: tuple[InventoryEntry, ...]
) -> list[InventoryEntry]:
    """What was applied from Git before and is gone from it now."""
    keep = {entry.key for entry in current}
    return [entry for entry in previous if entry.key not in keep]


def source_errors(problems: tuple[Problem, ...] | list[Problem]) -> tuple[SourceError, ...]:
    return tuple(
        SourceError(
            file=p.file or "", line=p.line, field=p.path if p.loc else "", message=p.message
        )
        for p in problems[:MAX_ERRORS]
    )


def source_files(
    revision: str, texts: Mapping[str, bytes], wanted: Iterable[str]
) -> tuple[SourceFile, ...]:
    """The ``wanted`` files' text at ``revision``, in path order, as many as fit in
    ``SOURCE_FILES_MAX_BYTES`` (a file that is not UTF-8 is left out)."""
    found: list[SourceFile] = []
    room = SOURCE_FILES_MAX_BYTES
    for path in sorted(set(wanted) & set(texts))[:SOURCE_FILES_MAX]:
        data = texts[path]
        if len(data) > room:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        found.append(SourceFile(revision=revision, path=path, text=text))
        room -= len(data)
    return tuple(found)


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
    scope: Scope = ANYWHERE,
) -> Result:
    """One pass; never raises for Git, validation, fleet or target failures (they are the
    result, and its status says which)."""
    run = _Pass(spec, status, checkout, target, source, now, generation)
    if spec.suspend:
        return run.finish(
            "Suspended", "suspended", ("False", "Suspended", "suspended: not fetching")
        )
    try:
        revision = run.fetch()
        run.verify(revision)
        bundle = run.validate(revision, check_program, scope)
        return run.apply(revision, bundle)
    except _Stopped as stopped:
        return stopped.result


class _Stopped(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


@dataclass
class _Pass:
    """The state one pass carries from step to step."""

    spec: GitSourceSpec
    status: GitSourceStatus
    checkout: git.Checkout
    target: Target
    source: str
    now: datetime
    generation: int | None
    texts: Mapping[str, bytes] = field(default_factory=dict)

    def fetch(self) -> git.Revision:
        """Bring the ref from the remote; a failure leaves everything as it was."""
        try:
            return self.checkout.fetch(self.spec.ref)
        except git.GitError as error:
            message = f"fetch failed: {error}"
            self._stop(self.finish("Failed", message, ("False", "FetchFailed", message)))

    def verify(self, revision: git.Revision) -> None:
        """With trusted keys set, only a commit signed by one of them goes further."""
        if not self.spec.trusted_signing_keys:
            return
        try:
            self.checkout.verify(revision.commit, self.spec.trusted_signing_keys)
        except git.GitError as error:
            self._reject(revision, "UntrustedRevision", str(error), self._error(error))

    def validate(
        self, revision: git.Revision, check_program: bundles.ProgramCheck | None, scope: Scope
    ) -> bundles.Bundle:
        """Read the manifests under the path (nothing else) and validate every one: the
        model, the fleet's checks on programs, and the source's scope."""
        try:
            files = self.checkout.manifests(revision.commit, self.spec.path)
        except git.GitError as error:
            self._reject(revision, "ReadFailed", str(error), self._error(error))
        self.texts = files
        # The revision in force passed the fleet's checks when it was applied; a pass
        # that only corrects drift need not ask again.
        name = str(revision)
        checked = None if name == self.status.last_applied_revision else check_program
        try:
            bundle = bundles.load(files, checked)
        except failures.Failure as error:  # the fleet could not be asked
            message = f"checking {name} against the fleet failed: {error}"
            self._stop(self.finish("Failed", message, ("False", "CheckFailed", message)))
        if not bundle.valid:
            count, first = len(bundle.problems), bundle.problems[0]
            message = f"{count} invalid manifest field(s), first {first}"
            self._reject(revision, "ValidationFailed", message, source_errors(bundle.problems))
        refused = scope.refusals(bundle.documents())
        if refused:
            message = f"{len(refused)} document(s) outside the source's scope, first {refused[0]}"
            self._reject(revision, "OutOfScope", message, source_errors(refused))
        return bundle

    def apply(self, revision: git.Revision, bundle: bundles.Bundle) -> Result:
        """Apply every document, then prune what left Git (when prune is on)."""
        name = str(revision)
        changed = pruned = 0
        previous = self.status.inventory
        try:
            for document in bundle.documents():
                changed += self.target.apply(document, name, self.source)
            if self.spec.prune:
                for gone in plan_prune(previous, bundle.inventory()):
                    self.target.delete(gone, self.source)
                    pruned += 1
        except failures.Failure as error:
            message = f"applying {name} failed: {_described(error)}"
            entry = HistoryEntry(
                revision=name, time=timestamp(self.now), result="Failed", message=message
            )
            # Keep everything that may still exist in the inventory, so a later pass prunes it.
            merged = {item.key: item for item in (*previous, *bundle.inventory())}
            permanent = isinstance(error, failures.PermanentFailure)
            return self.finish(
                "Failed",
                message,
                ("False", "ApplyFailed", message),
                stalled=("ApplyFailed", message) if permanent else None,
                changes={
                    **self._attempted(revision),
                    "history": _history(self.status, entry),
                    "inventory": tuple(merged[key] for key in sorted(merged)),
                },
            )
        summary = (
            f"applied {name}: {len(bundle.programs)} program(s), {len(bundle.policies)} policy(ies)"
        )
        entry = HistoryEntry(
            revision=name, time=timestamp(self.now), result="Applied", message=summary
        )
        result = self.finish(
            "Applied",
            summary,
            ("True", "Succeeded", summary),
            changes={
                **self._attempted(revision),
                "errors": (),
                "history": _history(self.status, entry),
                "inventory": bundle.inventory(),
                "last_applied_revision": name,
            },
        )
        held = [document.origin.rpartition(":")[0] for document in bundle.policies]
        return Result(
            result.status,
            "Applied",
            summary,
            changed,
            pruned,
            source_files(name, self.texts, held),
        )

    def finish(
        self,
        outcome: Outcome,
        message: str,
        ready: tuple[statuses.Truth, str, str],
        *,
        stalled: tuple[str, str] | None = None,
        changes: dict[str, object] | None = None,
    ) -> Result:
        """The pass's result: conditions from ``ready`` and ``stalled``, plus ``changes``."""
        found = statuses.conditions(
            self.status.conditions, self.now, self.generation, ready=ready, stalled=stalled
        )
        updated = self.status.model_copy(
            update={"conditions": found, "observed_generation": self.generation, **(changes or {})}
        )
        return Result(updated, outcome, message)

    def _reject(
        self,
        revision: git.Revision,
        reason: str,
        message: str,
        errors: tuple[SourceError, ...],
    ) -> NoReturn:
        """The revision is refused: nothing of it applies, and hand-made drift of the
        last good one is put back."""
        entry = HistoryEntry(
            revision=str(revision), time=timestamp(self.now), result="Rejected", message=message
        )
        kept = f"{message}; {self.status.last_applied_revision or 'nothing'} stays applied"
        result = self.finish(
            "Rejected",
            kept,
            ("False", reason, kept),
            stalled=(reason, kept),
            changes={
                **self._attempted(revision),
                "errors": errors,
                "history": _history(self.status, entry),
            },
        )
        _correct_drift(self.status, self.spec.path, self.checkout, self.target, self.source)
        named = source_files(str(revision), self.texts, (error.file for error in errors))
        self._stop(replace(result, files=named))

    def _attempted(self, revision: git.Revision) -> dict[str, object]:
        return {"last_fetched_revision": str(revision), "last_attempted_revision": str(revision)}

    @staticmethod
    def _error(error: git.GitError) -> tuple[SourceError, ...]:
        return (SourceError(file=error.file, message=str(error)),)

    @staticmethod
    def _stop(result: Result) -> NoReturn:
        raise _Stopped(result)


def _described(error: failures.Failure) -> str:
    return error.message + (f" ({'; '.join(error.problems)})" if error.problems else "")


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
        files = checkout.manifests(commit, root)
    except git.GitError:
        return
    bundle = bundles.load(files)
    inventory = {entry.key for entry in status.inventory}
    with contextlib.suppress(failures.Failure):
        for document in bundle.documents():
            if document.entry.key in inventory:
                target.apply(document, last, source)


# ---------------------------------------------------------------- pass after pass


def follow(
    one_pass: Callable[[], tuple[bool, float]],
    *,
    first_retry: float,
    sleep: Callable[[float], None],
    stopped: Callable[[], bool],
) -> None:
    """Pass after pass until ``stopped``: ``one_pass`` says whether it failed and the
    interval to keep; ``sleep`` waits (and returns early when woken)."""
    backoff = failures.Backoff(first_retry)
    while not stopped():
        failed, interval = one_pass()
        if stopped():
            return
        sleep(backoff.wait(failed, interval))
