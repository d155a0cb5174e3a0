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
