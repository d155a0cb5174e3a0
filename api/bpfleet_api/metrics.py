"""Prometheus metrics, read from the database at scrape time (no state of their own)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlmodel import Session, col, select

from bpfleet_api.db import get_engine
from bpfleet_api.models import Node, NodeProgramStatus, Rollout, RolloutPhase, utcnow
from bpfleet_api.notify import Waiters
from bpfleet_api.settings import get_settings


@dataclass(frozen=True)
class Counts:
    nodes: dict[str, int]  # by readiness
    states: dict[tuple[str, str], int]  # by (program, state)
    phases: dict[str, int]  # rollouts by phase


def count(session: Session, now: datetime, ready_seconds: float, unknown_seconds: float) -> Counts:
    """The gauges' numbers, counted by the database (GROUP BY): a scrape reads a few
    rows per program and state, whatever the size of the fleet."""
    heartbeat = col(Node.last_heartbeat)
    readiness = case(
        (heartbeat.is_(None), "Unknown"),
        (heartbeat >= now - timedelta(seconds=ready_seconds), "Ready"),
        (heartbeat >= now - timedelta(seconds=unknown_seconds), "NotReady"),
        else_="Unknown",
    )
    nodes = session.exec(select(readiness, func.count()).group_by(readiness)).all()
    states = session.exec(
        select(NodeProgramStatus.program, NodeProgramStatus.state, func.count()).group_by(
            col(NodeProgramStatus.program), col(NodeProgramStatus.state)
        )
    ).all()
    phases = session.exec(select(Rollout.phase, func.count()).group_by(col(Rollout.phase))).all()
    return Counts(
        nodes={str(name): int(number) for name, number in nodes},
        states={(program, state): int(number) for program, state, number in states},
        phases={RolloutPhase(phase).value: int(number) for phase, number in phases},
    )


class FleetCollector(Collector):
    def __init__(self, waiters: Waiters) -> None:
        self.waiters = waiters

    def collect(self) -> Iterator[GaugeMetricFamily]:
        settings = get_settings()
        with Session(get_engine()) as session:
            counts = count(
                session, utcnow(), settings.node_ready_seconds, settings.node_unknown_seconds
            )
        nodes, states, phases = counts.nodes, counts.states, counts.phases
        gauge = GaugeMetricFamily(
            "bpfleet_nodes", "Registered nodes by readiness.", labels=["readiness"]
        )
        for readiness in ("Ready", "NotReady", "Unknown"):
            gauge.add_metric([readiness], nodes.get(readiness, 0))
        yield gauge
        gauge = GaugeMetricFamily(
            "bpfleet_program_nodes",
            "Nodes per program and reported state.",
            labels=["program", "state"],
        )
        for (program, state), number in sorted(states.items()):
            gauge.add_metric([program, state], number)
        yield gauge
        gauge = GaugeMetricFamily("bpfleet_rollouts", "Rollouts by phase.", labels=["phase"])
        for phase, number in sorted(phases.items()):
            gauge.add_metric([phase], number)
        yield gauge
        yield GaugeMetricFamily(
            "bpfleet_long_polls", "Agent long-polls waiting now.", value=self.waiters.count
        )


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
