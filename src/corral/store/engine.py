"""Engine construction for the one SQL implementation (SQLite and Postgres).

URLs are accepted as users write them (``sqlite:///path``, ``postgresql://...``) and
given their async driver here (aiosqlite, asyncpg). SQLite gets WAL, a busy timeout
and foreign keys on every connection.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


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


def make_engine(url: str | None, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    target = async_url(url or default_database_url())
    kwargs: dict[str, Any] = {"echo": echo}
    if target.get_backend_name() == "sqlite":
        database = target.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
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
