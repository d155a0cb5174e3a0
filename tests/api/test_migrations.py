"""The Alembic migrations build exactly the schema the models declare, on SQLite and on
PostgreSQL, from nothing and from the previous revision with data in it."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from bpfleet_api import db, models
from sqlalchemy import Engine, text
from sqlmodel import SQLModel

pytestmark = pytest.mark.services


def _run(engine: Engine, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def test_upgrades_keep_data_and_match_the_models(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        _run(engine, "upgrade", "0001")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO node (name, labels, kernel_release, registered_at, "
                    "desired_revision, applied_revision) VALUES "
                    "('old-node', '{}', '6.1', CURRENT_TIMESTAMP, 7, 7)"
                )
            )
        db.migrate(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT desired_revision FROM node")).scalar() == 7
            assert connection.execute(text("SELECT id, epoch FROM policyepoch")).all() == [(1, 0)]
            assert models.PolicyEpoch.__tablename__ == "policyepoch"
            differences = compare_metadata(
                MigrationContext.configure(connection), SQLModel.metadata
            )
        assert differences == []
        _run(engine, "downgrade", "0001")
        db.migrate(engine)  # and back up again
    finally:
        engine.dispose()


def test_the_proposer_role_comes_and_goes(database_url: str) -> None:
    engine = db.make_engine(database_url)
    insert = text(
        "INSERT INTO token (name, role, digest, configured, created_at) "
        "VALUES (:name, :role, :digest, false, CURRENT_TIMESTAMP)"
    )
    try:
        db.migrate(engine)
        with engine.begin() as connection:
            connection.execute(insert, {"name": "p", "role": "PROPOSER", "digest": "d-proposer"})
            connection.execute(insert, {"name": "v", "role": "VIEWER", "digest": "d-viewer"})
            proposer = connection.execute(text("SELECT id FROM token WHERE name = 'p'")).scalar()
            connection.execute(
                text(
                    "INSERT INTO token (name, role, digest, configured, created_at, session_of) "
                    "VALUES ('p', 'PROPOSER', 'd-session', false, CURRENT_TIMESTAMP, :id)"
                ),
                {"id": proposer},
            )
        _run(engine, "downgrade", "0005")  # the revision before the proposer role's
        with engine.connect() as connection:
            names = connection.execute(text("SELECT name FROM token ORDER BY name")).scalars()
            assert list(names) == ["v"]  # proposers and their sessions are gone, the rest kept
        db.migrate(engine)
        with engine.begin() as connection:
            connection.execute(insert, {"name": "p", "role": "PROPOSER", "digest": "d-again"})
    finally:
        engine.dispose()
