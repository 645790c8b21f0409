"""Alembic migrations run from code: no alembic.ini at runtime.

Several replicas may start at once against one database, so the upgrade holds a lock:
a transaction-scoped advisory lock on Postgres, an exclusive file lock beside the
SQLite database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = "corral.store:migrations"
# The newest revision in migrations/versions (a test keeps it equal to Alembic's head).
# Knowing it lets a start-up with an up-to-date schema skip importing Alembic at all.
SHIPPED_HEAD = "0003"
_PG_LOCK_ID = 0x636F7272616C  # "corral"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade_sync(connection: Connection, revision: str) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    command.upgrade(alembic_config(connection), revision)


def _current_sync(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _sqlite_lock_path(engine: AsyncEngine) -> Path | None:
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        return None
    path = Path(database).expanduser()
    return path.with_name(path.name + ".migrate.lock")


@contextlib.asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    lock_path = _sqlite_lock_path(engine)
    if lock_path is None:
        yield
        return
    with lock_path.open("a") as handle:
        # In a thread: another holder may be a coroutine of this same event loop.
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _stored_revision(engine: AsyncEngine) -> str | None:
    """The schema revision recorded in the database, by plain SQL (None if none)."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    except DBAPIError:  # no such table: an empty database
        return None
    return rows[0] if len(rows) == 1 else None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; returns the revision now current."""
    if revision in ("head", SHIPPED_HEAD) and await _stored_revision(engine) == SHIPPED_HEAD:
        return SHIPPED_HEAD
    async with _sqlite_file_lock(engine), engine.begin() as conn:
        await conn.run_sync(_upgrade_sync, revision)
    return await current(engine)


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current_sync)
