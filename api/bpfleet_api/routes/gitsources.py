"""GitSources as their operators report them; "reconcile now", which operators
long-poll for (see ``bpfleet_api.gitsources``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from bpfleet_api import dashboard, gitsources, notify, policies
from bpfleet_api.db import get_engine
from bpfleet_api.deps import Admin, Reader, SessionDep, SettingsDep
from bpfleet_api.models import GitSourceRecord, utcnow
from bpfleet_api.settings import get_settings
from bpfleet_api.views import (
    GitSourceDetail,
    GitSourceReport,
    GitSourceView,
    HistoryView,
    InventoryItemView,
    ReconcileRequests,
    SourceFileView,
    parse_time,
)
from bpfleet_core.protocol import NamespaceName, ObjectName

router = APIRouter(prefix="/v1/gitsources", tags=["gitsources"])
RECHECK_SECONDS = 30.0  # a long-poll re-reads the database this often without a wake-up


def source_view(record: GitSourceRecord) -> GitSourceView:
    status = gitsources.status_of(record)
    state, reason, message = gitsources.state_of(status)
    return GitSourceView(
        namespace=record.namespace,
        name=record.name,
        spec=gitsources.spec_of(record),
        conditions=list(status.conditions),
        state=state,
        reason=reason,
        message=message,
        last_fetched_revision=status.last_fetched_revision,
        last_attempted_revision=status.last_attempted_revision,
        last_applied_revision=status.last_applied_revision,
        short_revision=gitsources.short_revision(status.last_applied_revision),
        applied_at=gitsources.applied_at(record),
        errors=list(status.errors),
        reported_at=record.reported_at,
        reconcile_requested_at=record.reconcile_requested_at,
        reconcile_pending=gitsources.reconcile_pending(record),
    )


def _inventory(session: Session, record: GitSourceRecord) -> list[InventoryItemView]:
    inventory = gitsources.status_of(record).inventory
    rows = {
        row.program.name: row
        for row in dashboard.program_rows(
            session,
            [
                program
                for program in dashboard.all_programs(session)
                if any(e.kind == "BpfProgram" and e.name == program.name for e in inventory)
            ],
        )
    }
    stored = {(p.namespace, p.name): p for p in dashboard.all_policies(session)}
    summaries = policies.summaries(session, stored.values())
    items = []
    for entry in inventory:
        namespace = (entry.namespace or "default") if entry.kind == "NetworkPolicy" else None
        ready, desired, state = 0, 0, "Missing"
        if entry.kind == "BpfProgram" and entry.name in rows:
            row = rows[entry.name]
            ready = row.summary.attached + row.summary.incompatible
            desired, state = row.summary.desired, row.status
        elif namespace is not None and (namespace, entry.name) in summaries:
            summary = summaries[(namespace, entry.name)]
            ready, desired = summary.enforcing, summary.desired
            state = dashboard.policy_status(summary)
        items.append(
            InventoryItemView(
                kind=entry.kind,
                namespace=namespace,
                name=entry.name,
                ready=ready,
                desired=desired,
                status=state,
            )
        )
    return items


@router.get("")
def list_sources(session: SessionDep, _: Reader) -> list[GitSourceView]:
    return [source_view(record) for record in gitsources.list_sources(session)]


@router.get("/reconcile-requests")
async def reconcile_requests(
    request: Request,
    settings: SettingsDep,
    _: Admin,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**62, description="The cursor last returned; absent: the newest now."),
    ] = None,
    wait: Annotated[float, Query(ge=0, le=3600, description="Seconds to wait for one.")] = 0,
) -> ReconcileRequests:
    """For operators: the sources someone asked to reconcile since ``after`` (long-poll).
    Without ``after`` it answers at once with the cursor to start from."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.long_poll_max_seconds)
    while True:
        cursor, names = await run_in_threadpool(_requests_after, after)
        if names or after is None or cursor != after:
            return ReconcileRequests(cursor=cursor, sources=names)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return ReconcileRequests(cursor=cursor, sources=[])
        await request.app.state.waiters.wait(gitsources.WAKE_KEY, min(remaining, RECHECK_SECONDS))


def _requests_after(after: int | None) -> tuple[int, list[str]]:
    with Session(get_engine()) as session:
        latest = gitsources.latest_request(session)
        if after is None or after > latest:  # a new operator, or the database was reset
            return latest, []
        return gitsources.requests_after(session, after)


@router.get("/{namespace}/{name}")
def get_source(
    namespace: NamespaceName, name: ObjectName, session: SessionDep, _: Reader
) -> GitSourceDetail:
    """The source, its history (each rejected revision with its problems, located) and
    its inventory, each object with how many of its nodes run or enforce it."""
    record = gitsources.get_source(session, namespace, name)
    return GitSourceDetail(
        **source_view(record).model_dump(),
        history=[
            HistoryView(
                revision=item.entry.revision,
                short_revision=gitsources.short_revision(item.entry.revision),
                time=parse_time(item.entry.time) or record.reported_at,
                result=item.entry.result,
                message=item.entry.message,
                errors=list(item.errors),
            )
            for item in gitsources.history_of(record)
        ],
        inventory=_inventory(session, record),
    )


def file_view(found: gitsources.FileAtRevision) -> SourceFileView:
    return SourceFileView(
        namespace=found.record.namespace,
        name=found.record.name,
        revision=found.file.revision,
        short_revision=gitsources.short_revision(found.file.revision),
        applied=found.applied,
        path=found.file.path,
        text=found.file.text,
        errors=list(found.errors),
    )


@router.get("/{namespace}/{name}/file")
def source_file(
    namespace: NamespaceName,
    name: ObjectName,
    session: SessionDep,
    _: Reader,
    path: Annotated[
        str, Query(max_length=4096, description="The file, from the repository's root.")
    ],
    revision: Annotated[
        str | None, Query(max_length=512, description="Absent: the applied revision.")
    ] = None,
) -> SourceFileView:
    """A file's text at a revision (the applied one, or a rejected one the history
    lists), as the operator read it, with the problems a rejection found in it: what the
    policy editor opens. Only files holding policies, or named by errors, are kept."""
    return file_view(gitsources.file_at(session, namespace, name, path, revision))


@router.put("/{namespace}/{name}/status")
def report_status(
    namespace: NamespaceName,
    name: ObjectName,
    report: GitSourceReport,
    session: SessionDep,
    _: Admin,
) -> GitSourceView:
    """For operators: the source's spec and status at the end of a pass."""
    record = gitsources.record_report(
        session,
        namespace=namespace,
        name=name,
        spec=report.spec,
        status=report.status,
        now=utcnow(),
        files=report.files,
    )
    session.commit()
    return source_view(record)


@router.delete("/{namespace}/{name}", status_code=204)
def delete_source(
    namespace: NamespaceName, name: ObjectName, session: SessionDep, _: Admin
) -> Response:
    """For operators: the source is gone; forget what it reported."""
    gitsources.delete_source(session, namespace, name)
    session.commit()
    return Response(status_code=204)


@router.post("/{namespace}/{name}/reconcile", status_code=202)
def reconcile(
    namespace: NamespaceName,
    name: ObjectName,
    request: Request,
    session: SessionDep,
    _: Admin,
) -> GitSourceView:
    """Reconcile now: the source's operator is woken and runs a pass (fetch, validate,
    apply); ``reconcilePending`` is true until that pass is reported."""
    gitsources.request_reconcile(session, namespace, name, utcnow())
    session.commit()
    request.app.state.waiters.wake([gitsources.WAKE_KEY])
    notify.publish(get_settings().redis_url, [gitsources.WAKE_KEY])
    return source_view(gitsources.get_source(session, namespace, name))
