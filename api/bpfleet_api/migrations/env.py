"""Alembic environment: migrations run on the connection ``db.migrate`` hands over."""

from __future__ import annotations

from alembic import context
from bpfleet_api import models  # noqa: F401 - registers the tables on SQLModel.metadata
from sqlmodel import SQLModel

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through bpfleet_api.db.migrate()")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
