"""Prometheus metrics, read from the database at scrape time (no state of their own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session, select

from bpfleet_api import fleet
from bpfleet_api.db import get_engine
from bpfleet_api.models import Node, NodeProgramStatus, Rollout, utcnow
from bpfleet_api.notify import Waiters
from bpfleet_api.settings import get_settings


class FleetCollector(Collector):
    def __init__(self, waiters: Waiters) -> None:
        self.waiters = waiters

    def collect(self) -> Iterator[GaugeMetricFamily]:
        settings, now = get_settings(), utcnow()
        with Session(get_engine()) as session:
            nodes = Counter(
                fleet.readiness(n, now, settings.node_ready_seconds, settings.node_unknown_seconds)
                for n in session.exec(select(Node)).all()
            )
            states = Counter(
                (s.program, s.state) for s in session.exec(select(NodeProgramStatus)).all()
            )
            phases = Counter(r.phase.value for r in session.exec(select(Rollout)).all())
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
        for (program, state), count in sorted(states.items()):
            gauge.add_metric([program, state], count)
        yield gauge
        gauge = GaugeMetricFamily("bpfleet_rollouts", "Rollouts by phase.", labels=["phase"])
        for phase, count in sorted(phases.items()):
            gauge.add_metric([phase], count)
        yield gauge
        yield GaugeMetricFamily(
            "bpfleet_long_polls", "Agent long-polls waiting now.", value=self.waiters.count
        )


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
