"""The fleet at a glance: one request for the dashboard's first page."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from bpfleet_api import dashboard, gitsources, policies
from bpfleet_api.deps import Reader, SessionDep, SettingsDep
from bpfleet_api.models import GitSourceRecord, utcnow
from bpfleet_api.routes.nodes import thresholds
from bpfleet_api.views import (
    OverviewView,
    PolicyCounts,
    ProgramCounts,
    ReadinessCounts,
    SummaryView,
    SyncView,
)

router = APIRouter(prefix="/v1/overview", tags=["dashboard"])


def _sync(record: GitSourceRecord | None, ready: int, desired: int) -> SyncView:
    if record is None:
        return SyncView(
            source=None,
            applied_revision="",
            short_revision="",
            applied_at=None,
            ready="True" if ready == desired else "False",
            reason="",
            nodes_ready=ready,
            nodes_desired=desired,
        )
    status = gitsources.status_of(record)
    conditions = {condition.type.value: condition for condition in status.conditions}
    condition = conditions.get("Ready")
    return SyncView(
        source=f"{record.namespace}/{record.name}",
        applied_revision=status.last_applied_revision,
        short_revision=gitsources.short_revision(status.last_applied_revision),
        applied_at=gitsources.applied_at(record),
        ready=condition.status if condition is not None else "Unknown",
        reason=condition.reason if condition is not None else "",
        nodes_ready=ready,
        nodes_desired=desired,
    )


@router.get("")
def overview(session: SessionDep, settings: SettingsDep, _: Reader) -> OverviewView:
    """Nodes by readiness, programs and policies by status, and sync in two stages per
    GitSource: Git -> fleet (the revision applied, when) and fleet -> nodes (n/N)."""
    readiness = dashboard.readiness_counts(session, thresholds(settings), utcnow())
    rows = dashboard.program_rows(session, dashboard.all_programs(session))
    by_name = {row.program.name: row for row in rows}
    stored = dashboard.all_policies(session)
    summaries = policies.summaries(session, stored)
    policy_statuses = Counter(dashboard.policy_status(summary) for summary in summaries.values())
    totals = SummaryView(
        desired=sum(row.summary.desired for row in rows),
        attached=sum(row.summary.attached for row in rows),
        failed=sum(row.summary.failed for row in rows),
        incompatible=sum(row.summary.incompatible for row in rows),
        pending=sum(row.summary.pending for row in rows),
    )
    sources = []
    for record in gitsources.list_sources(session):
        inventory = gitsources.status_of(record).inventory
        objects = [(entry.kind, entry.namespace, entry.name) for entry in inventory]
        sources.append(_sync(record, *dashboard.sync_of(objects, by_name, summaries)))
    everything = [("BpfProgram", None, row.program.name) for row in rows] + [
        ("NetworkPolicy", policy.namespace, policy.name) for policy in stored
    ]
    return OverviewView(
        nodes=ReadinessCounts(
            ready=readiness["Ready"],
            not_ready=readiness["NotReady"],
            unknown=readiness["Unknown"],
        ),
        programs=ProgramCounts(
            total=len(rows),
            by_status=dict(Counter(row.status for row in rows)),
            nodes=totals,
        ),
        policies=PolicyCounts(total=len(stored), by_status=dict(policy_statuses)),
        sources=sources,
        fleet=_sync(None, *dashboard.sync_of(everything, by_name, summaries)),
    )
