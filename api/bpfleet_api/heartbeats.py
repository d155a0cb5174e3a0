"""Heartbeats: how often agents beat, when a silent node stops being Ready, and the
buffer that keeps beats off the database's hot path.

A heartbeat costs its request nothing but a dict write. Beats are folded per node and
written together, one statement per flush whatever their number, node rows in name
order. The fleet's beats per second are bounded: the API tells each agent its interval
(``X-Bpfleet-Heartbeat-Interval``), stretched as the fleet grows, and readiness
windows stretch with it (as Nomad stretches its clients' heartbeat TTL).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, bindparam, case, update
from sqlmodel import Session, SQLModel, col

from bpfleet_api.models import Node
from bpfleet_api.settings import ApiSettings

INTERVAL_HEADER = "X-Bpfleet-Heartbeat-Interval"
# Intervals of silence before a node is NotReady (two missed beats and a margin for a
# loaded network), and before it is Unknown.
NOT_READY_BEATS = 3
UNKNOWN_BEATS = 6


def interval_for(nodes: int, settings: ApiSettings) -> float:
    """Seconds between one agent's beats: the fleet's beats per second stay within
    ``heartbeats_per_second``, never more often than the floor nor less than the ceiling."""
    wanted = nodes / settings.heartbeats_per_second
    return min(max(wanted, settings.heartbeat_min_seconds), settings.heartbeat_max_seconds)


@dataclass(frozen=True)
class Liveness:
    """Heartbeat ages past which a node is NotReady, then Unknown."""

    interval_seconds: float
    ready_seconds: float
    unknown_seconds: float


def liveness(nodes: int, settings: ApiSettings) -> Liveness:
    """Readiness windows for a fleet of ``nodes``: the configured ones, widened to cover
    the beats a stretched interval spaces out."""
    interval = interval_for(nodes, settings)
    return Liveness(
        interval,
        max(settings.node_ready_seconds, NOT_READY_BEATS * interval),
        max(settings.node_unknown_seconds, UNKNOWN_BEATS * interval),
    )


# The fleet's size as this process last counted it (``observe_fleet``).
_fleet_size = 0


def observe_fleet(nodes: int) -> None:
    global _fleet_size  # noqa: PLW0603 - one number per process, read by every view
    _fleet_size = nodes


def current(settings: ApiSettings) -> Liveness:
    """Readiness windows for the fleet as this process last counted it."""
    return liveness(_fleet_size, settings)


def _applied(claimed: object) -> object:
    """The applied revision after a beat: it never goes back, and never passes the
    revision the node was sent (a node's word is not taken beyond that)."""
    desired, applied = col(Node.desired_revision), col(Node.applied_revision)
    bounded = case((desired < claimed, desired), else_=claimed)
    return case((applied > bounded, applied), else_=bounded)


_NODE = SQLModel.metadata.tables["node"]
# One statement for a whole flush (executemany: pipelined on PostgreSQL), compiled once.
_WRITE_BEAT = (
    update(_NODE)
    .where(_NODE.c.name == bindparam("beat_node"))
    .values(
        last_heartbeat=bindparam("beat_at"),
        applied_revision=_applied(bindparam("beat_revision", type_=BigInteger)),
    )
)


class HeartbeatBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[datetime, int]] = {}

    def record(self, node: str, revision: int, at: datetime) -> None:
        with self._lock:
            previous = self._pending.get(node)
            self._pending[node] = (at, max(revision, previous[1] if previous else 0))

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self, session: Session) -> int:
        """Write what has accumulated in one statement (executed for many rows, in name
        order); return how many nodes it covered.
        A failed write (a deadlock, the database away) keeps the beats for the next."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        beats = [
            {"beat_node": node, "beat_at": at, "beat_revision": revision}
            for node, (at, revision) in sorted(pending.items())
        ]
        try:
            session.connection().execute(_WRITE_BEAT, beats)
            session.commit()
        except Exception:
            session.rollback()
            with self._lock:
                for name, (at, revision) in pending.items():
                    newer = self._pending.get(name)
                    if newer is None:
                        self._pending[name] = (at, revision)
                    else:
                        self._pending[name] = (newer[0], max(revision, newer[1]))
            raise
        return len(pending)
