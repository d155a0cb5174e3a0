"""Heartbeats, buffered: a heartbeat costs the request nothing but a dict write.

Thousands of agents beat every few seconds; writing each beat as its own transaction
would make the database the bottleneck of the whole API. Beats are folded per node and
written once a second, in one transaction. Readiness can lag by that second.
"""

from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy import ColumnElement, case, update
from sqlmodel import Session, col

from bpfleet_api.models import Node


def _applied(revision: int) -> ColumnElement[int]:
    """The applied revision after a beat: it never goes back, and never passes the
    revision the node was sent (a node's word is not taken beyond that)."""
    desired, applied = col(Node.desired_revision), col(Node.applied_revision)
    claimed = case((desired < revision, desired), else_=revision)
    return case((applied > claimed, applied), else_=claimed)


class HeartbeatBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[datetime, int]] = {}

    def record(self, node: str, revision: int, at: datetime) -> None:
        with self._lock:
            previous = self._pending.get(node)
            self._pending[node] = (at, max(revision, previous[1] if previous else 0))

    def flush(self, session: Session) -> int:
        """Write what has accumulated; return how many nodes were updated."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for node, (at, revision) in pending.items():
            session.execute(
                update(Node)
                .where(col(Node.name) == node)
                .values(last_heartbeat=at, applied_revision=_applied(revision))
            )
        session.commit()
        return len(pending)
