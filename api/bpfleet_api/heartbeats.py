"""Heartbeats, buffered: a heartbeat costs the request nothing but a dict write.

Thousands of agents beat every few seconds; writing each beat as its own transaction
would make the database the bottleneck of the whole API. Beats are folded per node and
written once a second, in one transaction. Readiness can lag by that second.
"""

from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col

from bpfleet_api.models import Node


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
                .values(last_heartbeat=at, applied_revision=revision)
                .where(col(Node.applied_revision) <= revision)
            )
        session.commit()
        return len(pending)
