"""The database connection: engine, sessions, and schema migrations (Alembic)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, create_engine

from bpfleet_api.settings import get_settings

Insert = postgresql.Insert | sqlite.Insert

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # WAL lets readers (long-polls) proceed while a writer commits.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # Bulk writes as psycopg's pipelined executemany of one statement (converted once),
    # rather than multi-row INSERTs whose text differs, and is parsed again, each time.
    return create_engine(
        url, pool_size=20, max_overflow=40, pool_pre_ping=True, use_insertmanyvalues=False
    )


@cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


# Any number fixed for the project: the PostgreSQL advisory lock migrations hold.
_MIGRATION_LOCK = 0x62706674


def migrate(engine: Engine, then: Callable[[Session], None] | None = None) -> None:
    """Bring the schema to the newest migration (idempotent), then run ``then`` (the
    rest of a process's start-up writes) in the same transaction. Several API processes
    may start at once: one does all this while the others wait for it, then find nothing
    to do (a PostgreSQL advisory lock; on SQLite a lock on a file beside the database)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        if then is not None:
            with Session(bind=connection) as session:
                then(session)
                session.flush()  # committed with the migration's transaction, lock held


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with Path(f"{database}.migrate-lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def insert_for(session: Session, table: type[SQLModel]) -> Insert:
    """An INSERT that can say ON CONFLICT, in the session's dialect (PostgreSQL or
    SQLite: both take the same upsert)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def get_session() -> Iterator[Session]:
    # Objects stay readable after commit: routes commit, then render what they changed.
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session
