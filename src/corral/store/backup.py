"""Backup, restore and integrity checks for the one SQL store.

SQLite uses the online backup API: one read transaction copies a consistent snapshot
while writers keep going (WAL), so a backup is safe while `corral serve` runs.
PostgreSQL uses ``pg_dump --format=custom`` and ``pg_restore --clean`` in one
transaction. The password never appears on a command line (it goes in ``PGPASSWORD``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from corral.store.engine import POOLER_PARAM, is_sqlite, without_pooler

PG_MAGIC = b"PGDMP"
SQLITE_MAGIC = b"SQLite format 3\x00"


class BackupError(Exception):
    """A backup, restore or check that could not be done; the message says why."""


@dataclass(slots=True)
class CheckResult:
    backend: str
    ok: bool
    tables: int
    detail: list[str] = field(default_factory=list)
    revision: str | None = None


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"{url}: an in-memory database has nothing to back up")
    return Path(database).expanduser()


def _sqlite_check(conn: sqlite3.Connection) -> CheckResult:
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    ok = problems == ["ok"] and not fk
    detail = [] if ok else problems + [f"foreign key violation in {row[0]} rowid {row[1]}" for row in fk]
    revision = None
    if "alembic_version" in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    return CheckResult("sqlite", ok, len(tables), detail, revision)


def _open_existing(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"{path}: no such database file")
    with path.open("rb") as handle:
        if handle.read(16) not in (SQLITE_MAGIC, b""):  # SQLite treats an empty file as an empty database
            raise BackupError(f"{path}: not a SQLite database")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def backup_sqlite(url: str, dest: Path) -> CheckResult:
    try:
        return _backup_sqlite(url, dest)
    except sqlite3.Error as exc:
        raise BackupError(str(exc)) from None


def _backup_sqlite(url: str, dest: Path) -> CheckResult:
    live = sqlite_path(url)
    if dest.resolve() == live.resolve():
        raise BackupError(f"{dest} is the live database itself; write the backup somewhere else")
    source = _open_existing(live)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        target = sqlite3.connect(partial)
        try:
            # pages=-1: the whole copy in one step, inside one read transaction. Stepwise
            # copying restarts whenever another connection writes, so under steady write
            # load it might never finish.
            source.backup(target, pages=-1)
            result = _sqlite_check(target)
        finally:
            target.close()
    finally:
        source.close()
    if not result.ok:
        partial.unlink(missing_ok=True)
        raise BackupError(f"the copy failed its integrity check: {'; '.join(result.detail)}")
    partial.replace(dest)
    return result


def restore_sqlite(url: str, src: Path) -> CheckResult:
    try:
        return _restore_sqlite(url, src)
    except sqlite3.Error as exc:
        raise BackupError(str(exc)) from None


def _restore_sqlite(url: str, src: Path) -> CheckResult:
    source = _open_existing(src)
    try:
        checked = _sqlite_check(source)
        if not checked.ok:
            raise BackupError(f"{src}: failed its integrity check, nothing restored: {'; '.join(checked.detail)}")
        target_path = sqlite_path(url)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(target_path, timeout=30)
        try:
            # The backup API writes through SQLite's own locking, so WAL and readers stay
            # consistent, which copying the file over would not guarantee.
            source.backup(target, pages=-1)
            return _sqlite_check(target)
        finally:
            target.close()
    finally:
        source.close()


def check_sqlite(url: str) -> CheckResult:
    conn = _open_existing(sqlite_path(url))
    try:
        return _sqlite_check(conn)
    except sqlite3.DatabaseError as exc:  # a damaged file may not even parse far enough to check
        return CheckResult("sqlite", False, 0, [str(exc)])
    finally:
        conn.close()


# ---- PostgreSQL -----------------------------------------------------------------


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the env that carries it."""
    parsed: URL = make_url(url)
    env: dict[str, str] = {}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    query = dict(parsed.query)
    query.pop(POOLER_PARAM, None)  # Corral's own (`corral.store.engine`), unknown to libpq
    ssl = query.pop("ssl", None)  # asyncpg spelling
    if ssl and "sslmode" not in query:
        query["sslmode"] = ssl
    clean = URL.create("postgresql", username=parsed.username, host=parsed.host, port=parsed.port,
                       database=parsed.database, query=query)
    return clean.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} not found on PATH (install the PostgreSQL client tools)")
    return path


def _run(argv: list[str], env: Mapping[str, str]) -> None:
    completed = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {completed.stderr.strip() or completed.returncode}")


def backup_postgres(url: str, dest: Path) -> None:
    target, env = libpq_target(url)
    partial = dest.with_name(dest.name + ".partial")
    try:
        _run([_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={target}"], env)
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(dest)


def restore_postgres(url: str, src: Path) -> None:
    if not src.is_file():
        raise BackupError(f"{src}: no such backup file")
    target, env = libpq_target(url)
    with src.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(SQLITE_MAGIC[:15]):
        raise BackupError(f"{src} is a SQLite database but the configured database is PostgreSQL")
    if head.startswith(PG_MAGIC):
        argv = [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
                "--exit-on-error", f"--dbname={target}", str(src)]
    else:  # a plain SQL dump (`pg_dump > file.sql`)
        argv = [_tool("psql"), "--quiet", "--no-psqlrc", "--single-transaction", "--set=ON_ERROR_STOP=1",
                f"--file={src}", f"--dbname={target}"]
    _run(argv, env)


def check_postgres(url: str, *, timeout: float = 10.0) -> CheckResult:
    import asyncio

    import asyncpg

    async def run() -> CheckResult:
        target = make_url(without_pooler(url)).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = await asyncpg.connect(target, timeout=timeout)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BackupError(f"cannot connect: {exc}") from None
        # One transaction: behind a transaction-mode pooler each statement outside one may
        # land on another server connection than the one it was prepared on.
        try:
            async with conn.transaction(readonly=True):
                tables = await conn.fetchval(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )
                revision = None
                if await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
                    revision = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
                version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        return CheckResult("postgresql", True, int(tables), [f"server {version}"], revision)

    return asyncio.run(run())


def backup_database(url: str, dest: Path) -> CheckResult | None:
    """Write a backup of ``url`` to ``dest`` (atomically: a failed backup leaves no file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite(url):
        return backup_sqlite(url, dest)
    backup_postgres(url, dest)
    return None


def restore_database(url: str, src: Path) -> CheckResult:
    if is_sqlite(url):
        return restore_sqlite(url, src)
    restore_postgres(url, src)
    return check_postgres(url)


def check_database(url: str) -> CheckResult:
    return check_sqlite(url) if is_sqlite(url) else check_postgres(url)
