"""Engine construction for the one SQL implementation (SQLite and Postgres).

URLs are accepted as users write them (``sqlite:///path``, ``postgresql://...``) and
given their async driver here (aiosqlite, asyncpg). SQLite gets WAL, a busy timeout
and foreign keys on every connection.

Behind a transaction-mode pooler (PgBouncer) a server connection is only ours for one
transaction, so nothing may outlive it: asyncpg's statement cache is off, SQLAlchemy's
prepared-statement cache is off, and every prepared statement gets a unique name, since
another client may have left a statement of asyncpg's default name (``__asyncpg_stmt_1__``)
on the server connection we are handed next. SQLAlchemy's asyncpg adapter runs every
statement, pings included, inside a transaction, which is what keeps a statement's
prepare and its execution on one server connection.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

Pooler = Literal["pgbouncer"]
POOLER_PARAM = "pooler"  # postgresql://...?pooler=pgbouncer, the URL's way to say database.pooler


class PoolerError(ValueError):
    """An unknown pooler, or a pooler named for a database that is not Postgres."""


def data_dir() -> Path:
    """The user data dir (``CORRAL_DATA_DIR`` overrides), created on first use."""
    override = os.environ.get("CORRAL_DATA_DIR")
    if override:
        path = Path(override).expanduser()
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("corral", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_database_url(name: str = "corral.db") -> str:
    return f"sqlite:///{data_dir() / name}"


def async_url(url: str) -> URL:
    """Give a user-written URL its async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.drivername != "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql" and parsed.drivername != "postgresql+asyncpg":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    return make_url(str(url) if isinstance(url, URL) else url).get_backend_name() == "sqlite"


def split_pooler(url: URL, pooler: str | None = None) -> tuple[URL, Pooler | None]:
    """The URL without its ``pooler`` query parameter (asyncpg would refuse it), and the
    pooler it or the ``pooler`` argument (``database.pooler``) names."""
    named = url.query.get(POOLER_PARAM)
    if isinstance(named, tuple):
        named = named[-1]
    stripped = url.difference_update_query([POOLER_PARAM])
    chosen = pooler or named or None
    if chosen is None:
        return stripped, None
    if chosen not in get_args(Pooler):
        raise PoolerError(f"unknown database pooler {chosen!r} (known: {', '.join(get_args(Pooler))})")
    if url.get_backend_name() != "postgresql":
        raise PoolerError(f"pooler {chosen!r} is for Postgres, not {url.get_backend_name()}")
    return stripped, chosen  # type: ignore[return-value]  # checked against Pooler just above


def with_pooler(url: str, pooler: str) -> str:
    """``url`` naming ``pooler`` in its query, so every client of the URL knows of it."""
    parsed = make_url(url)
    return parsed.update_query_dict({POOLER_PARAM: pooler}).render_as_string(hide_password=False)


def without_pooler(url: str) -> str:
    """``url`` without the ``pooler`` parameter, for clients other than the engine (asyncpg
    would send it to the server as a setting; libpq refuses it)."""
    parsed = make_url(url)
    if POOLER_PARAM not in parsed.query:
        return url
    return parsed.difference_update_query([POOLER_PARAM]).render_as_string(hide_password=False)


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def pooler_connect_args(pooler: Pooler | None) -> dict[str, Any]:
    """What the asyncpg driver needs behind ``pooler`` (see the module docstring)."""
    if pooler is None:
        return {}
    return {
        "statement_cache_size": 0,  # asyncpg's own cache
        "prepared_statement_cache_size": 0,  # SQLAlchemy's adapter cache
        "prepared_statement_name_func": _unique_statement_name,
    }


def make_engine(
    url: str | None, *, pool_size: int = 10, echo: bool = False, pooler: str | None = None
) -> AsyncEngine:
    target, chosen = split_pooler(async_url(url or default_database_url()), pooler)
    kwargs: dict[str, Any] = {"echo": echo}
    if target.get_backend_name() == "sqlite":
        database = target.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        if chosen is not None:
            kwargs["connect_args"] = pooler_connect_args(chosen)
    engine = create_async_engine(target, **kwargs)
    if target.get_backend_name() == "sqlite":
        _install_sqlite_pragmas(engine)
    return engine


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
