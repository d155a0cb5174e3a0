"""Status reports, taken in batches: each API process gathers the reports that arrive
while the previous batch is being written, and writes them together (group commit): a
few statements and one commit per batch, whatever its size. A report is answered once
its batch is committed, so a 204 still means "stored"; a failed batch answers 503 and
the agents send again. Writing is idempotent (``fleet.record_reports``), so a batch
sent or applied twice changes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fastapi import HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select as sa_select
from sqlalchemy import union
from sqlmodel import Session, col

from bpfleet_api import db, fleet, policies
from bpfleet_api.models import NodePolicy, NodePolicyStatus, aware
from bpfleet_core.protocol import NodeReport

log = logging.getLogger(__name__)

MAX_BATCH = 250  # a thread holding the GIL longer would stall the loop
# How long the first report of a batch waits for others when nothing is being written.
GATHER_SECONDS = 0.01


def record(session: Session, reports: Sequence[NodeReport], events_kept: int) -> None:
    """Store a batch of reports (the caller commits): programs in bulk, then the policy
    reports of the nodes that have or had a policy part."""
    fleet.record_reports(session, reports, events_kept)
    names = sorted({report.node for report in reports})
    with_policy = {report.node for report in reports if report.policy is not None}
    for start in range(0, len(names), fleet.CHUNK):
        chunk = names[start : start + fleet.CHUNK]
        with_policy.update(
            session.execute(
                union(
                    sa_select(col(NodePolicy.node)).where(col(NodePolicy.node).in_(chunk)),
                    sa_select(col(NodePolicyStatus.node)).where(
                        col(NodePolicyStatus.node).in_(chunk)
                    ),
                )
            ).scalars()
        )
    newest = {report.node: report for report in sorted(reports, key=lambda r: aware(r.reported_at))}
    for name in sorted(with_policy):
        if name in newest:
            policies.record_report(session, name, newest[name].policy)


def _write(reports: list[NodeReport], events_kept: int) -> None:
    with Session(db.get_engine()) as session:
        record(session, reports, events_kept)
        session.commit()


class ReportBatcher:
    """Gathers reports on the event loop and writes them a batch at a time."""

    def __init__(self, events_kept: int) -> None:
        self._events_kept = events_kept
        self._pending: list[tuple[NodeReport, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, report: NodeReport) -> None:
        """Return once the report is committed; 503 if its batch could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await future

    async def _write_all(self) -> None:
        await asyncio.sleep(GATHER_SECONDS)
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await run_in_threadpool(_write, [report for report, _ in batch], self._events_kept)
            except Exception:
                log.exception("a batch of %d status report(s) could not be stored", len(batch))
                failure = HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    "the report could not be stored; send it again",
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
