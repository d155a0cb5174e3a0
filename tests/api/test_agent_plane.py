"""The agent plane as a fleet lives it: status batches delivered twice, a rollout's one
task chain whatever re-queues it, nodes that go silent mid-rollout, labels that change
under running programs. Real API (uvicorn, two worker processes), Celery and Redis, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import ast
import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
from bpfleet_api import db, ingest
from bpfleet_api.models import Assignment, Event, Node, NodeProgramStatus, Rollout
from sqlmodel import Session, col, func, select

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import NodeReport, ProgramState
from tests import services
from tests.api.conftest import upload
from tests.api.test_fleet_flow import ProtocolClient
from tests.conftest import SignedCatalog
from tests.polling import wait_for

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def plane(
    database_url: str, signed_catalog: SignedCatalog, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[services.Api, services.Redis]]:
    """An API of its own (two processes), with Redis of its own (its queue is inspected),
    and a fast clock: 1 s heartbeats, NotReady after 3 s of silence."""
    with (
        services.redis_server() as redis,
        services.api_server(
            database_url,
            redis.url,
            signed_catalog.trust,
            tmp_path_factory.mktemp("logs"),
            workers=2,
            rollout_tick_seconds="0.3",
            heartbeat_min_seconds="1",
            node_ready_seconds="2",
            node_unknown_seconds="6",
        ) as api,
    ):
        yield api, redis


# ------------------------------------------------------------------- status batches


def _report(node: str, revision: int, state: str, at: datetime) -> NodeReport:
    return NodeReport.model_validate(
        {
            "node": node,
            "revision": revision,
            "reportedAt": at.isoformat(),
            "programs": [{"name": "p", "state": state, "updatedAt": at.isoformat()}],
        }
    )


def _stored(session: Session, nodes: list[str]) -> tuple[object, ...]:
    statuses = session.exec(
        select(
            NodeProgramStatus.node,
            NodeProgramStatus.state,
            NodeProgramStatus.generation,
            NodeProgramStatus.reported_at,
        )
        .where(col(NodeProgramStatus.node).in_(nodes))
        .order_by(col(NodeProgramStatus.node))
    ).all()
    applied = session.exec(
        select(Node.name, Node.applied_revision).where(col(Node.name).in_(nodes))
    ).all()
    events = session.exec(
        select(func.count()).select_from(Event).where(col(Event.node).in_(nodes))
    ).one()
    return tuple(statuses), tuple(sorted(applied)), events


def test_a_replayed_status_batch_changes_nothing_twice(database_url: str, tmp_path: Path) -> None:
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/batch.db"  # its own: the module's API holds the other
    engine = db.make_engine(url)
    db.migrate(engine)
    group = uuid.uuid4().hex[:6]
    nodes = [f"batch-{group}-{index}" for index in range(3)]
    early = datetime(2026, 1, 1, tzinfo=UTC)
    later = early + timedelta(minutes=1)
    try:
        with Session(engine) as session:
            for name in nodes:
                session.add(Node(name=name, desired_revision=2))
                session.add(Assignment(node=name, program="p", generation=1, revision=2))
            session.commit()
            batch = [
                _report(nodes[0], 2, "Attached", later),
                _report(nodes[1], 2, "LoadFailed", later),
                # The same node twice in one batch (a retry): its newest report counts.
                _report(nodes[2], 1, "Pending", early),
                _report(nodes[2], 2, "Attached", later),
            ]
            ingest.record(session, batch, events_kept=100)
            session.commit()
            first = _stored(session, nodes)
            assert [(row[0], row[1], row[2]) for row in first[0]] == [  # type: ignore[index]
                (nodes[0], "Attached", 1),
                (nodes[1], "LoadFailed", 1),
                (nodes[2], "Attached", 1),
            ]
            assert first[1] == tuple((name, 2) for name in nodes)
            assert first[2] == 3  # one event per node: its state changed once

            # Delivered again, whole or in part: nothing changes, no event is added.
            ingest.record(session, batch, events_kept=100)
            ingest.record(session, batch[:2], events_kept=100)
            session.commit()
            assert _stored(session, nodes) == first

            # An older report arriving late never overwrites a newer one.
            ingest.record(session, [_report(nodes[0], 1, "LoadFailed", early)], 100)
            session.commit()
            assert _stored(session, nodes) == first

            # A newer one does, once.
            newest = _report(nodes[1], 2, "Attached", later + timedelta(minutes=1))
            for _ in range(2):
                ingest.record(session, [newest], events_kept=100)
                session.commit()
            statuses, _, events = _stored(session, nodes)
            assert statuses[1][1] == "Attached"  # type: ignore[index]
            assert events == 4
    finally:
        engine.dispose()


# ------------------------------------------------------------------- one task chain


def _chains(redis: services.Redis, rollout_id: int) -> list[int | None]:
    """The chain of every queued or held (unacknowledged) advance_rollout message of a
    rollout in Celery's Redis queue."""
    client = redis_client.Redis.from_url(redis.url)
    try:
        messages = [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
        messages += [json.loads(raw)[0] for raw in client.hvals("unacked")]
    finally:
        client.close()
    chains: list[int | None] = []
    for message in messages:
        headers = message.get("headers", {})
        if headers.get("task") != "bpfleet.advance_rollout":
            continue
        arguments = ast.literal_eval(headers["argsrepr"])
        if arguments[0] == rollout_id:
            chains.append(arguments[1] if len(arguments) > 1 else None)
    return chains


def _chain_of(database_url: str, rollout_id: int) -> int:
    engine = db.make_engine(database_url)
    try:
        with Session(engine) as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            return rollout.chain
    finally:
        engine.dispose()


def _one_chain(redis: services.Redis, database_url: str, rollout_id: int) -> bool:
    """Every message of the rollout carries the rollout's own chain, five times in a row
    (a chain has one message, two while a task hands over to the next)."""
    for _ in range(5):
        chains = _chains(redis, rollout_id)
        if not chains or set(chains) != {_chain_of(database_url, rollout_id)} or len(chains) > 2:
            return False
        time.sleep(0.2)
    return True


def test_one_task_chain_per_rollout_after_repeated_puts_and_a_worker_restart(
    plane: tuple[services.Api, services.Redis],
    database_url: str,
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
) -> None:
    api, redis = plane
    worker = api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    nodes = [
        ProtocolClient(api, f"chain-{group}-{i}", {"group": group}, recorded_features)
        for i in range(2)
    ]
    name = f"chain-{group}"
    spec = {
        "artifact": {"name": artifact["name"], "version": artifact["version"]},
        "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        "nodeSelector": {"matchLabels": {"group": group}},
        "rollout": {"steps": ["1", "100%"]},
    }
    with api.client() as client:
        rollout_id = client.put(f"/v1/programs/{name}", json=spec).json()["rollout"]["id"]
        # Step one's node never reports: the rollout keeps ticking, waiting for it.
        wait_for(
            lambda: len(client.get(f"/v1/programs/{name}").json()["rollout"]["updatedNodes"]) == 1,
            30,
            "step one",
        )
        wait_for(lambda: _one_chain(redis, database_url, rollout_id), 30, "a chain")
        started = _chain_of(database_url, rollout_id)

        for _ in range(3):  # the same spec again (a GitOps pass, say): no new chain
            again = client.put(f"/v1/programs/{name}", json=spec)
            assert again.status_code == 200
            assert again.json()["generation"] == 1
        assert _one_chain(redis, database_url, rollout_id)
        assert _chain_of(database_url, rollout_id) == started

        worker.send_signal(signal.SIGTERM)  # its held task goes back to the queue
        worker.wait(timeout=30)
        api.start_worker()  # which starts a chain of its own for every active rollout
        wait_for(lambda: _chain_of(database_url, rollout_id) > started, 30, "a new chain")
        wait_for(lambda: _one_chain(redis, database_url, rollout_id), 30, "one chain again")

        # And that one chain still finishes the rollout.
        first = next(n for n in nodes if n.poll(wait=5) is not None)
        first.report({name: ProgramState.ATTACHED})
        others = [n for n in nodes if n is not first]
        for node in others:
            assert node.poll(wait=10) is not None
            node.report({name: ProgramState.ATTACHED})
        wait_for(
            lambda: client.get(f"/v1/programs/{name}").json()["rollout"]["phase"] == "Succeeded",
            30,
            "the rollout to succeed",
        )
        events = [e["reason"] for e in client.get(f"/v1/programs/{name}/events").json()]
        assert events.count("RolloutSucceeded") == 1


# ------------------------------------------------------------------- nodes that go silent


class LiveNode:
    """A node's agent as a thread: long-polls, reports Attached for what it is assigned,
    heartbeats as often as the API asks. ``kill()`` stops all of it at once."""

    def __init__(self, node: ProtocolClient) -> None:
        self.node = node
        self.alive = threading.Event()
        self.alive.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.node.api.client(self.node.token) as client:
            interval, next_beat = 1.0, 0.0
            while self.alive.is_set():
                if time.monotonic() >= next_beat:
                    beat = client.post("/v1/agent/heartbeat", json={"revision": self.node.revision})
                    interval = float(beat.headers.get("X-Bpfleet-Heartbeat-Interval", interval))
                    next_beat = time.monotonic() + interval
                response = client.get(
                    "/v1/agent/assignments", params={"after": self.node.revision, "wait": 0.5}
                )
                if response.status_code == 200 and self.alive.is_set():
                    document = response.json()
                    self.node.revision = document["revision"]
                    states = {p["name"]: ProgramState.ATTACHED for p in document["programs"]}
                    self.node.report(states)

    def kill(self) -> None:
        self.alive.clear()
        self.thread.join(10)


@contextlib.contextmanager
def live_nodes(nodes: list[ProtocolClient]) -> Iterator[list[LiveNode]]:
    running = [LiveNode(node) for node in nodes]
    try:
        yield running
    finally:
        for node in running:
            node.kill()


def test_a_node_killed_mid_rollout_turns_not_ready_and_the_rollout_ends_by_its_deadline(
    plane: tuple[services.Api, services.Redis],
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
) -> None:
    api, _ = plane
    api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    names = [f"silent-{group}-{letter}" for letter in "abc"]  # c comes last in every step
    nodes = [ProtocolClient(api, name, {"group": group}, recorded_features) for name in names]
    program = f"silent-{group}"
    spec = {
        "artifact": {"name": artifact["name"], "version": artifact["version"]},
        "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        "nodeSelector": {"matchLabels": {"group": group}},
        "rollout": {"steps": ["1", "100%"], "progressDeadlineSeconds": 4},
    }
    with live_nodes(nodes) as running, api.client() as client:
        wait_for(
            lambda: all(
                client.get(f"/v1/nodes/{name}").json()["readiness"] == "Ready" for name in names
            ),
            30,
            "every node Ready",
        )
        assert client.put(f"/v1/programs/{program}", json=spec).status_code == 200
        running[2].kill()  # node c's agent dies before its step comes
        wait_for(
            lambda: client.get(f"/v1/nodes/{names[2]}").json()["readiness"] != "Ready",
            30,
            "node c NotReady",
        )
        done = wait_for(
            lambda: (
                document
                if (document := client.get(f"/v1/programs/{program}").json())["rollout"]["phase"]
                in ("Succeeded", "Failed", "RolledBack")
                else None
            ),
            60,
            "the rollout to end",
        )
    rollout: dict[str, Any] = done["rollout"]
    assert rollout["phase"] == "Succeeded", rollout
    assert "unreachable node(s) skipped" in rollout["message"]
    assert done["summary"]["attached"] == 2
    assert done["summary"]["pending"] == 1  # c gets it when it comes back


def test_label_changes_reassign_programs(
    plane: tuple[services.Api, services.Redis],
    signed_catalog: SignedCatalog,
    recorded_features: FeatureReport,
) -> None:
    api, _ = plane
    api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    program = f"edge-{group}"
    node = ProtocolClient(api, f"labels-{group}", {"group": group}, recorded_features)
    spec = {
        "artifact": {"name": artifact["name"], "version": artifact["version"]},
        "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
        "nodeSelector": {"matchLabels": {"group": group, "tier": "edge"}},
    }

    def assigned() -> list[str] | None:
        document = node.poll(wait=10)
        return [p["name"] for p in document["programs"]] if document is not None else None

    with api.client() as client:
        assert client.put(f"/v1/programs/{program}", json=spec).status_code == 200
        wait_for(
            lambda: client.get(f"/v1/programs/{program}").json()["rollout"]["phase"] == "Succeeded",
            30,
            "a rollout to no node",
        )
        assert node.poll(wait=0.5) is None  # not selected

        # An admin (the operator, from the Kubernetes Node) labels it: it gets the program.
        labelled = client.put(f"/v1/nodes/{node.name}/labels", json={"labels": {"tier": "edge"}})
        assert labelled.status_code == 200, labelled.text
        assert assigned() == [program]

        # Its agent registers again with labels of its own: the admin's stay, and so does
        # the program (nothing new to tell the node).
        again = ProtocolClient(
            api, node.name, {"group": group, "zone": "a"}, recorded_features, node.node_key
        )
        node.token = again.token
        shown = client.get(f"/v1/nodes/{node.name}").json()
        assert shown["labels"] == {"group": group, "zone": "a", "tier": "edge"}
        assert node.poll(wait=1) is None

        # The admin's label goes: so does the program.
        assert client.put(f"/v1/nodes/{node.name}/labels", json={"labels": {}}).status_code == 200
        assert assigned() == []

        # The agent's own labels select it again.
        again = ProtocolClient(
            api, node.name, {"group": group, "tier": "edge"}, recorded_features, node.node_key
        )
        node.token = again.token
        assert assigned() == [program]


# ------------------------------------------------------------ processes starting at once


def _all_at_once(count: int, work: Callable[[], None]) -> list[Exception]:
    """Run ``work`` in ``count`` threads released together; what they raised."""
    together, failures = threading.Barrier(count), []

    def run() -> None:
        together.wait()
        try:
            work()
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return failures


def test_processes_starting_at_once_make_the_configured_tokens_valid_once(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every API process migrates and makes the configured tokens valid as it starts;
    started together (uvicorn --workers), none may fail on another's insert."""
    from bpfleet_api.main import prepare_database
    from bpfleet_api.models import Token
    from bpfleet_api.settings import ApiSettings

    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/starting.db"
    else:  # a database of its own: rotating the admin token would lock the module's API out
        url = request.getfixturevalue("postgres").create_database()
    engine = db.make_engine(url)
    try:
        for _ in range(3):  # each round configures new tokens: each is a fresh race
            settings = ApiSettings(
                database_url=url,
                admin_token=f"admin-{uuid.uuid4().hex}",
                bootstrap_token=f"bootstrap-{uuid.uuid4().hex}",
            )
            assert _all_at_once(8, lambda s=settings: prepare_database(engine, s)) == []
            with Session(engine) as session:
                valid = session.exec(
                    select(Token.name)
                    .where(col(Token.configured).is_(True), col(Token.revoked_at).is_(None))
                    .order_by(col(Token.name))
                ).all()
            assert valid == ["admin", "bootstrap"]  # one each: the new ones, earlier revoked
    finally:
        engine.dispose()


def test_a_process_knows_every_node_after_one_refresh(database_url: str, tmp_path: Path) -> None:
    """At start (and after a restore) each API process reads the whole fleet in bulk,
    so first long-polls cost no query; a node whose revision moved is read back too."""
    from bpfleet_api.documents import AgentPlane

    url = f"sqlite:///{tmp_path}/known.db" if database_url.startswith("sqlite") else database_url
    engine = db.make_engine(url)
    db.migrate(engine)
    names = [f"known-{uuid.uuid4().hex[:6]}-{index}" for index in range(2500)]
    plane = AgentPlane()
    try:
        with Session(engine) as session:
            session.execute(
                Node.__table__.insert(),  # type: ignore[attr-defined]
                [{"name": name, "desired_revision": 3} for name in names],
            )
            session.commit()
            assert plane.refresh(session) == []
            assert all(plane.revision_of(name) == 3 for name in names)
            moved = session.get(Node, names[0])
            assert moved is not None
            moved.desired_revision = 4
            session.commit()
            assert plane.refresh(session) == [names[0]]  # its long-polls are woken
            assert plane.revision_of(names[0]) == 4
            session.execute(Node.__table__.delete().where(col(Node.name) == names[1]))  # type: ignore[attr-defined]
            session.commit()
            assert plane.refresh(session) == [names[1]]
            assert plane.revision_of(names[1]) is None  # its long-poll is told it is gone
    finally:
        engine.dispose()
