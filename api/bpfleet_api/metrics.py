"""Prometheus metrics: the fleet counted by the database at scrape time (GROUP BY, no
rows loaded), and the latency of the agent protocol as each API process serves it.

With several API processes (``--workers``), each keeps its own histogram; set
``PROMETHEUS_MULTIPROC_DIR`` (a directory emptied before start, as the chart does) and
every scrape sums them all, whichever process answers it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlmodel import Session, col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bpfleet_api import heartbeats
from bpfleet_api.db import get_engine
from bpfleet_api.models import Node, NodeProgramStatus, Rollout, RolloutPhase, utcnow
from bpfleet_api.notify import Waiters
from bpfleet_api.settings import get_settings

_MULTIPROCESS = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROCESS:  # each process writes its values there; it must exist first
    Path(_MULTIPROCESS).mkdir(parents=True, exist_ok=True)

# The agent protocol's calls, by path: what a fleet's size is felt in.
AGENT_PATHS = {
    "/v1/agent/heartbeat": "heartbeat",
    "/v1/agent/status": "status",
    "/v1/agent/assignments": "assignments",
    "/v1/agent/register": "register",
}
REQUEST_SECONDS = Histogram(
    "bpfleet_agent_request_seconds",
    "Agent protocol calls, from the request's arrival to the end of the answer "
    "(long-polls included: their wait counts).",
    ["call"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


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
            fleet_size = session.exec(select(func.count()).select_from(Node)).one()
            liveness = heartbeats.liveness(fleet_size, settings)
            counts = count(session, utcnow(), liveness.ready_seconds, liveness.unknown_seconds)
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


def registry(waiters: Waiters) -> CollectorRegistry:
    """What ``/metrics`` shows: the fleet's gauges, and the protocol's latency (summed
    over every API process when ``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    found = CollectorRegistry()
    found.register(FleetCollector(waiters))
    if _MULTIPROCESS:
        multiprocess.MultiProcessCollector(found)  # type: ignore[no-untyped-call]
    else:
        found.register(REQUEST_SECONDS)
        found.register(LOOP_LAG_SECONDS)
        found.register(FULL_COLLECTION_SECONDS)
    return found


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


LOOP_LAG_SECONDS = Histogram(
    "bpfleet_event_loop_lag_seconds",
    "How late the API's event loop runs a timer (GIL or CPU contention): what every "
    "request waits before its handler starts, which the request histogram cannot see.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG_PROBE_SECONDS = 0.1
FULL_COLLECTION_SECONDS = Histogram(
    "bpfleet_full_collection_seconds",
    "Full garbage collections run when no rollout is waking long-polls, and how long "
    "each held its API process (requests wait meanwhile).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


async def measure_loop_lag() -> None:
    """Observe the loop's lag every LAG_PROBE_SECONDS (a task for the app's life)."""
    while True:
        expected = time.perf_counter() + LAG_PROBE_SECONDS
        await asyncio.sleep(LAG_PROBE_SECONDS)
        LOOP_LAG_SECONDS.observe(max(0.0, time.perf_counter() - expected))


class LatencyMiddleware:
    """Times agent protocol calls on the server (the cross-check of what agents see)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = AGENT_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if call is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                REQUEST_SECONDS.labels(call).observe(time.perf_counter() - started)

        await self.app(scope, receive, timed)
