"""Listings read what they show: artifact lists and garbage collection never read an
object's bytes, and metrics are counted by the database, never row by row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bpfleet_api import db, fleet, metrics
from bpfleet_api.changes import NotFound
from bpfleet_api.models import Artifact, Node, NodeProgramStatus, utcnow
from sqlalchemy import Engine, event
from sqlmodel import Session

from tests.conftest import SignedCatalog

pytestmark = pytest.mark.services


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/queries.db"  # its own: another module's API holds the other
    made = db.make_engine(url)
    db.migrate(made)
    yield made
    made.dispose()


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*arguments: Any) -> None:
        seen.append(str(arguments[2]).lower())

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_artifact_listings_and_garbage_collection_leave_objects_unread(
    engine: Engine, statements: list[str], signed_catalog: SignedCatalog
) -> None:
    files = signed_catalog.files("syscount")
    digest = uuid.uuid4().hex * 2
    with Session(engine) as session:
        session.add(
            Artifact(
                digest=digest,
                name=f"big-{digest[:6]}",
                version="1.0.0",
                manifest=files.manifest.read_bytes(),
                signature=files.signature.read_bytes(),
                object=b"\0" * (8 * 1024 * 1024),
                signer="test",
            )
        )
        session.commit()
    statements.clear()
    with Session(engine) as session:
        listed = {artifact.digest: artifact for artifact in fleet.list_artifacts(session)}
        assert fleet.manifest_of(listed[digest]).name == "syscount"
        assert fleet.artifact_by_digest(session, digest).version == "1.0.0"
        assert fleet.artifact_file(session, digest, "signature") == files.signature.read_bytes()
        reads = [s for s in statements if s.startswith("select")]
        assert reads
        assert not [s for s in reads if "artifact.object" in s], reads
        statements.clear()
        assert digest in fleet.collect_garbage(session)
        session.commit()
        assert not [s for s in statements if "artifact.object" in s], statements
        with pytest.raises(NotFound):
            fleet.artifact_by_digest(session, digest)


def test_metrics_are_counted_by_the_database(engine: Engine, statements: list[str]) -> None:
    now = utcnow()
    run = uuid.uuid4().hex[:6]
    with Session(engine) as session:
        for index, age in enumerate((1, 5, 60, 600, None)):
            name = f"m-{run}-{index}"
            beat = now - timedelta(seconds=age) if age is not None else None
            session.add(Node(name=name, last_heartbeat=beat))
            session.add(
                NodeProgramStatus(
                    node=name,
                    program=f"prog-{run}",
                    state="Attached" if index % 2 else "LoadFailed",
                    report={"big": "x" * 10_000},
                )
            )
        session.commit()
    statements.clear()
    with Session(engine) as session:
        counts = metrics.count(session, now, ready_seconds=20, unknown_seconds=120)
    assert counts.states[(f"prog-{run}", "Attached")] == 2
    assert counts.states[(f"prog-{run}", "LoadFailed")] == 3
    assert counts.nodes["Ready"] >= 2
    assert counts.nodes["NotReady"] >= 1
    assert counts.nodes["Unknown"] >= 2
    assert len(statements) == 3
    assert all("group by" in statement for statement in statements), statements
    assert not [s for s in statements if "report" in s], statements
