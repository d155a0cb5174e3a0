"""GitSources as their operators report them, reconcile requests, and where each fleet
object came from. Like ``fleet``, these functions never commit.

The operator owns every GitSource (kopf in a cluster, or standalone) and is the only
Git client; at the end of each pass it reports the source's spec and status here, so
the dashboard shows sources the same way in both modes, with the text of the files the
policy editor opens (kept for the applied revision and for the rejected revisions the
history lists). "Reconcile now" is a request stored here that operators long-poll for,
as agents do for assignments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete
from sqlmodel import Session, col, select

from bpfleet_api.changes import NotFound
from bpfleet_api.models import GitSourceFile, GitSourceRecord, ReconcileRequest, aware
from bpfleet_api.views import parse_time
from bpfleet_core.netpol import drafting
from bpfleet_core.resources import (
    GitSourceSpec,
    GitSourceStatus,
    HistoryEntry,
    InventoryEntry,
    SourceError,
    SourceFile,
)

HISTORY_LENGTH = 50  # the status keeps a few entries; the dashboard shows more
REQUESTS_KEPT = timedelta(days=1)  # older requests were seen (or their operator is gone)
WAKE_KEY = "/gitsources"  # a waiter key no node name can take (names hold no '/')

SourceState = Literal["Ready", "Reconciling", "Stalled", "Failed", "Unknown"]


def short_revision(revision: str) -> str:
    """``main@sha1:0123456789ab...`` -> ``0123456``; anything else as it is."""
    _, found, commit = revision.rpartition("@sha1:")
    return commit[:7] if found else revision


def merge_history(
    kept: list[dict[str, Any]], status: GitSourceStatus, limit: int = HISTORY_LENGTH
) -> list[dict[str, Any]]:
    """The stored history with the newly reported entries added, newest first. A
    rejected entry for the revision last attempted takes the status's errors along, so
    each rejection keeps its own problems after later passes replace them."""
    seen = {(entry["revision"], entry["time"], entry["result"]) for entry in kept}
    added = []
    for entry in status.history:
        if (entry.revision, entry.time, entry.result) in seen:
            continue
        errors = (
            status.errors
            if entry.result == "Rejected" and entry.revision == status.last_attempted_revision
            else ()
        )
        added.append(
            {
                **entry.model_dump(mode="json", by_alias=True),
                "errors": [error.model_dump(mode="json", by_alias=True) for error in errors],
            }
        )
    merged = sorted([*added, *kept], key=lambda entry: str(entry["time"]), reverse=True)
    return merged[:limit]


def record_report(
    session: Session,
    *,
    namespace: str,
    name: str,
    spec: GitSourceSpec | None,
    status: GitSourceStatus,
    now: datetime,
    files: Iterable[SourceFile] = (),
) -> GitSourceRecord:
    """Keep what an operator says about a source at the end of a pass."""
    record = session.get(GitSourceRecord, (namespace, name)) or GitSourceRecord(
        namespace=namespace, name=name
    )
    record.spec = spec.model_dump(mode="json", by_alias=True) if spec is not None else None
    record.status = status.model_dump(mode="json", by_alias=True)
    record.history = merge_history(list(record.history), status)
    record.reported_at = now
    session.add(record)
    _keep_files(session, record, files)
    return record


def _kept_revisions(record: GitSourceRecord) -> set[str]:
    applied = status_of(record).last_applied_revision
    rejected = {entry["revision"] for entry in record.history if entry["result"] == "Rejected"}
    return {applied, *rejected} - {""}


def _keep_files(session: Session, record: GitSourceRecord, files: Iterable[SourceFile]) -> None:
    """Store the files shipped with a report (a file known at its revision is not
    written again) and forget those of revisions nothing refers to any more."""
    kept = _kept_revisions(record)
    stored = session.exec(
        select(GitSourceFile).where(
            GitSourceFile.namespace == record.namespace, GitSourceFile.name == record.name
        )
    ).all()
    known = {(row.revision, row.path) for row in stored}
    for row in stored:
        if row.revision not in kept:
            session.delete(row)
    for item in files:
        if item.revision in kept and (item.revision, item.path) not in known:
            known.add((item.revision, item.path))
            session.add(
                GitSourceFile(
                    namespace=record.namespace,
                    name=record.name,
                    revision=item.revision,
                    path=item.path,
                    text=item.text,
                )
            )


@dataclass(frozen=True)
class FileAtRevision:
    record: GitSourceRecord
    file: GitSourceFile
    errors: tuple[SourceError, ...]  # the rejection's problems in this file

    @property
    def applied(self) -> bool:
        return self.file.revision == status_of(self.record).last_applied_revision


def file_at(
    session: Session, namespace: str, name: str, path: str, revision: str | None
) -> FileAtRevision:
    """A file of the source at ``revision`` (default: the applied one), with the
    problems its rejection found in it."""
    record = get_source(session, namespace, name)
    wanted = revision or status_of(record).last_applied_revision
    row = session.get(GitSourceFile, (namespace, name, wanted, path))
    if row is None:
        raise NotFound(
            f"GitSource {namespace}/{name} has no text of {path} at {wanted or 'any revision'}"
        )
    errors = tuple(
        error
        for item in history_of(record)
        if item.entry.revision == wanted and item.entry.result == "Rejected"
        for error in item.errors
        if error.file == path
    )
    return FileAtRevision(record, row, errors)


def policy_file(session: Session, namespace: str, name: str) -> tuple[FileAtRevision, int]:
    """Where a policy in force is written: the file of its source's applied revision
    that defines it, and the line its document starts on."""
    key = f"{namespace}/{name}"
    for record in list_sources(session):
        if not any(
            entry.kind == "NetworkPolicy"
            and (entry.namespace or "default", entry.name) == (namespace, name)
            for entry in status_of(record).inventory
        ):
            continue
        applied = status_of(record).last_applied_revision
        rows = session.exec(
            select(GitSourceFile)
            .where(
                GitSourceFile.namespace == record.namespace,
                GitSourceFile.name == record.name,
                GitSourceFile.revision == applied,
            )
            .order_by(col(GitSourceFile.path))
        ).all()
        for row in rows:
            for document in drafting.read(row.text).documents:
                if document.policy is not None and document.policy.key == key:
                    return FileAtRevision(record, row, ()), document.source.line
        raise NotFound(f"the text of policy {key} at {applied} was not shipped by its operator")
    raise NotFound(f"policy {key} is in no GitSource's inventory: it was set through the API")


def get_source(session: Session, namespace: str, name: str) -> GitSourceRecord:
    record = session.get(GitSourceRecord, (namespace, name))
    if record is None:
        raise NotFound(f"GitSource {namespace}/{name} has not been reported by an operator")
    return record


def list_sources(session: Session) -> list[GitSourceRecord]:
    return list(
        session.exec(
            select(GitSourceRecord).order_by(
                col(GitSourceRecord.namespace), col(GitSourceRecord.name)
            )
        ).all()
    )


def delete_source(session: Session, namespace: str, name: str) -> None:
    """Forget a source (its operator no longer follows it) and its files."""
    session.delete(get_source(session, namespace, name))
    session.execute(
        delete(GitSourceFile).where(
            col(GitSourceFile.namespace) == namespace, col(GitSourceFile.name) == name
        )
    )


# ------------------------------------------------------------------------ reading


def status_of(record: GitSourceRecord) -> GitSourceStatus:
    return GitSourceStatus.model_validate(record.status)


def spec_of(record: GitSourceRecord) -> GitSourceSpec | None:
    return GitSourceSpec.model_validate(record.spec) if record.spec is not None else None


def state_of(status: GitSourceStatus) -> tuple[SourceState, str, str]:
    """One word for the source, from its kstatus conditions, with reason and message."""
    conditions = {condition.type.value: condition for condition in status.conditions}
    ready, stalled = conditions.get("Ready"), conditions.get("Stalled")
    reconciling = conditions.get("Reconciling")
    if stalled is not None and stalled.status == "True":
        return "Stalled", stalled.reason, stalled.message
    if reconciling is not None and reconciling.status == "True":
        return "Reconciling", reconciling.reason, reconciling.message
    if ready is None:
        return "Unknown", "", "no pass reported yet"
    if ready.status == "True":
        return "Ready", ready.reason, ready.message
    if ready.status == "False":
        return "Failed", ready.reason, ready.message
    return "Unknown", ready.reason, ready.message


def applied_at(record: GitSourceRecord) -> datetime | None:
    """When the revision in force was applied, from the history."""
    applied = status_of(record).last_applied_revision
    for entry in record.history:
        if entry["result"] == "Applied" and entry["revision"] == applied:
            return parse_time(str(entry["time"]))
    return None


def reconcile_pending(record: GitSourceRecord) -> bool:
    requested = record.reconcile_requested_at
    return requested is not None and aware(requested) > aware(record.reported_at)


@dataclass(frozen=True)
class HistoryItem:
    entry: HistoryEntry
    errors: tuple[SourceError, ...]


def history_of(record: GitSourceRecord) -> list[HistoryItem]:
    return [
        HistoryItem(
            HistoryEntry.model_validate({k: v for k, v in item.items() if k != "errors"}),
            tuple(SourceError.model_validate(error) for error in item.get("errors", [])),
        )
        for item in record.history
    ]


@dataclass(frozen=True)
class Origin:
    namespace: str
    name: str
    revision: str


def origins(
    records: Iterable[GitSourceRecord],
) -> dict[tuple[str, str | None, str], Origin]:
    """(kind, namespace, name) -> the source whose inventory holds that object. An
    object in no inventory was set through the API."""
    found: dict[tuple[str, str | None, str], Origin] = {}
    for record in records:
        status = status_of(record)
        for entry in status.inventory:
            key = (entry.kind, _namespace(entry), entry.name)
            found.setdefault(
                key, Origin(record.namespace, record.name, status.last_applied_revision)
            )
    return found


def _namespace(entry: InventoryEntry) -> str | None:
    if entry.kind == "NetworkPolicy":
        return entry.namespace or "default"
    return None


# ------------------------------------------------------------------------ requests


def request_reconcile(session: Session, namespace: str, name: str, now: datetime) -> None:
    """Ask the source's operator for a pass now; it long-polls ``requests_after``."""
    record = get_source(session, namespace, name)
    record.reconcile_requested_at = now
    session.add(record)
    session.execute(
        delete(ReconcileRequest).where(col(ReconcileRequest.requested_at) < now - REQUESTS_KEPT)
    )
    session.add(ReconcileRequest(namespace=namespace, name=name, requested_at=now))


def latest_request(session: Session) -> int:
    newest = session.exec(
        select(ReconcileRequest.id).order_by(col(ReconcileRequest.id).desc())
    ).first()
    return newest or 0


def requests_after(session: Session, cursor: int) -> tuple[int, list[str]]:
    """Sources asked to reconcile since ``cursor``, and the cursor to pass next."""
    rows = session.exec(
        select(ReconcileRequest)
        .where(col(ReconcileRequest.id) > cursor)
        .order_by(col(ReconcileRequest.id))
    ).all()
    if not rows:
        return cursor, []
    names = sorted({f"{row.namespace}/{row.name}" for row in rows})
    return max(row.id or 0 for row in rows), names
