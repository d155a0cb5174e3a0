"""What a node reports is bounded: states only for programs it was assigned, texts
clipped, lists capped, its revision never beyond the one it was sent, events pruned; and
after a database restore its assignments come at once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from bpfleet_api import db, fleet
from bpfleet_api.models import Assignment, Event, Node
from sqlmodel import Session, col, func, select

from bpfleet_core.features import FeatureReport
from bpfleet_core.protocol import MAX_ITEMS, MAX_REVISION, MESSAGE_TEXT, VERIFIER_LOG_TEXT
from tests import services
from tests.api.conftest import upload
from tests.api.test_fleet_flow import ProtocolClient, wait_for
from tests.conftest import SignedCatalog
from tests.polling import wait_for as eventually

pytestmark = pytest.mark.services

NOW = "2026-01-01T00:00:00Z"


def _program(name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "updatedAt": NOW, **extra}


def _report(node: ProtocolClient, programs: list[dict[str, Any]], revision: int) -> int:
    body = {"node": node.name, "revision": revision, "programs": programs, "reportedAt": NOW}
    with node.api.client(node.token) as client:
        return client.post("/v1/agent/status", json=body).status_code


def test_a_node_keeps_no_state_for_programs_it_was_never_assigned(
    api: services.Api, recorded_features: FeatureReport
) -> None:
    node = ProtocolClient(api, f"rep-{uuid.uuid4().hex[:6]}", {}, recorded_features)
    # 50 made-up names with 10 KB messages (a 5 MB body would not even be read).
    made_up = [
        _program(f"../x y {i}" + "A" * 100, "LoadFailed", message="m" * 10_000) for i in range(50)
    ]
    assert _report(node, made_up, MAX_REVISION) == 204
    with api.client() as client:
        shown = client.get(f"/v1/nodes/{node.name}").json()
        assert shown["programs"] == []
        assert shown["appliedRevision"] <= shown["desiredRevision"]
        assert "../x y" not in client.get("/metrics").text
    engine = db.make_engine(api.environment["BPFLEET_API_DATABASE_URL"])
    try:
        with Session(engine) as session:
            events = select(func.count()).select_from(Event).where(Event.node == node.name)
            assert session.exec(events).one() == 0
    finally:
        engine.dispose()


def test_texts_are_clipped_lists_capped_and_revisions_kept_to_what_was_sent(
    api: services.Api, signed_catalog: SignedCatalog, recorded_features: FeatureReport
) -> None:
    api.start_worker()
    artifact = upload(api, signed_catalog, "execsnoop")
    group = uuid.uuid4().hex[:6]
    node = ProtocolClient(api, f"rep-{group}", {"group": group}, recorded_features)
    name = f"rep-{group}"
    with api.client() as client:
        response = client.put(
            f"/v1/programs/{name}",
            json={
                "artifact": {"name": artifact["name"], "version": artifact["version"]},
                "attach": [{"entryPoint": "handle_exec", "type": "tracepoint"}],
                "nodeSelector": {"matchLabels": {"group": group}},
            },
        )
        assert response.status_code == 200, response.text
        wait_for(client, f"/v1/programs/{name}", lambda p: p["summary"]["desired"] == 1)
    assert node.poll(wait=10) is not None
    log = "".join(f"{i}: R1 invalid mem access\n" for i in range(20_000)) + "the end"
    failed = _program(name, "LoadFailed", message="m" * 100_000, verifierLog=log[-300_000:])
    assert _report(node, [failed], MAX_REVISION) == 204
    with api.client() as client:
        (row,) = client.get(f"/v1/programs/{name}/nodes").json()
        assert row["state"] == "LoadFailed"
        assert len(row["message"]) == MESSAGE_TEXT
        detail = client.get(f"/v1/nodes/{node.name}").json()
        assert detail["appliedRevision"] == detail["desiredRevision"] == node.revision
    link = {"name": "l", "entryPoint": "e", "hook": "h", "linkId": 1, "programId": 1}
    too_many = _program(name, "Attached", links=[link] * (MAX_ITEMS + 1))
    assert _report(node, [too_many], node.revision) == 422
    stored = fleet_report(api, node.name, name)
    assert len(stored["verifierLog"]) == VERIFIER_LOG_TEXT
    assert stored["verifierLog"].endswith("the end")  # the end of a log says why

    # Heartbeats are held to the revision sent too.
    with api.client() as client:
        before = client.get(f"/v1/nodes/{node.name}").json()["lastHeartbeat"]
    with api.client(node.token) as client:
        assert (
            client.post("/v1/agent/heartbeat", json={"revision": MAX_REVISION}).status_code == 204
        )
    with api.client() as client:
        beaten = eventually(
            lambda: (
                (now := client.get(f"/v1/nodes/{node.name}").json())["lastHeartbeat"] != before
                and now
            ),
            what="the heartbeat to be written",
        )
    # Held to what the node was sent: never past its desired revision (which another
    # test's program for every node may move on meanwhile), and no longer behind it.
    assert node.revision <= beaten["appliedRevision"] <= beaten["desiredRevision"]


def fleet_report(api: services.Api, node: str, program: str) -> dict[str, Any]:
    """The stored report of a program on a node, as the database holds it."""
    from bpfleet_api.models import NodeProgramStatus

    engine = db.make_engine(api.environment["BPFLEET_API_DATABASE_URL"])
    try:
        with Session(engine) as session:
            row = session.get(NodeProgramStatus, (node, program))
            assert row is not None
            return dict(row.report)
    finally:
        engine.dispose()


def test_after_a_restore_an_agent_gets_its_assignments_at_once(
    api: services.Api, recorded_features: FeatureReport
) -> None:
    node = ProtocolClient(api, f"restore-{uuid.uuid4().hex[:6]}", {}, recorded_features)
    with api.client() as client:
        desired = client.get(f"/v1/nodes/{node.name}").json()["desiredRevision"]
    # The agent applied revision desired + 100 before the database went back in time.
    with api.client(node.token) as client:
        response = client.get("/v1/agent/assignments", params={"after": desired + 100, "wait": 30})
    assert response.status_code == 200
    assert response.json()["revision"] == desired
    assert response.json()["node"] == node.name


def test_each_program_keeps_its_newest_events(database_url: str, tmp_path: Path) -> None:
    from bpfleet_core.protocol import NodeReport

    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/events.db"  # its own: the module's API holds the other
    engine = db.make_engine(url)
    db.migrate(engine)
    name = f"ev-{uuid.uuid4().hex[:6]}"
    try:
        with Session(engine) as session:
            session.add(Node(name=name, desired_revision=1))
            session.add(Assignment(node=name, program="p", generation=1, revision=1))
            session.add(Assignment(node=name, program="q", generation=1, revision=1))
            session.commit()
            for index in range(12):
                node = session.get(Node, name)
                assert node is not None
                state = "Attached" if index % 2 else "LoadFailed"
                report = NodeReport.model_validate(
                    {
                        "node": name,
                        "revision": 1,
                        "reportedAt": NOW,
                        "programs": [_program("p", state), _program("q", state)],
                    }
                )
                fleet.record_report(session, node, report, events_kept=5)
                session.commit()
            for program in ("p", "q"):
                kept = session.exec(
                    select(Event.message, Event.reason)
                    .where(Event.program == program, Event.node == name)
                    .order_by(col(Event.id))
                ).all()
                assert len(kept) == 5
                assert kept[-1][1] == "Attached"  # the newest survive
            count = session.exec(
                select(func.count()).select_from(Event).where(Event.node == name)
            ).one()
            assert count == 10
    finally:
        engine.dispose()
