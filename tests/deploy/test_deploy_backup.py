"""`corral db backup|restore|check` on a live database under write load: SQLite through
the online backup API, PostgreSQL through pg_dump/pg_restore, both for real."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.store.backup import libpq_target

from .conftest import invoke


def _payload(row_id: int) -> str:
    return f"row-{row_id}-" + "x" * (row_id % 50)


class Writer:
    """Inserts numbered rows, one commit each, until stopped; counts what was committed."""

    def __init__(self, insert: Callable[[Callable[[], bool]], None]) -> None:
        self.committed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=insert, args=(self._step,), daemon=True)

    def _step(self) -> bool:
        self.committed += 1
        return not self._stop.is_set()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def wait_for(self, rows: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.committed < rows:
            assert time.monotonic() < deadline, f"writer reached only {self.committed} rows"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


def _sqlite_rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, payload FROM events ORDER BY id").fetchall()


def _sqlite_writer(path: Path) -> Writer:
    def insert(step: Callable[[], bool]) -> None:
        conn = sqlite3.connect(path, timeout=30)
        row_id = 0
        while True:
            row_id += 1
            conn.execute("INSERT INTO events (id, payload) VALUES (?, ?)", (row_id, _payload(row_id)))
            conn.commit()
            if not step():
                break
        conn.close()

    return Writer(insert)


def _assert_consecutive_snapshot(rows: list[tuple[int, str]], at_least: int, at_most: int) -> None:
    ids = [row_id for row_id, _ in rows]
    assert ids == list(range(1, len(ids) + 1))  # a consistent snapshot: no gaps, no torn rows
    assert at_least <= len(ids) <= at_most
    assert all(payload == _payload(row_id) for row_id, payload in rows)


def test_sqlite_backup_under_write_load_then_restore(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    with sqlite3.connect(live) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # what Corral's engine sets on every connection
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    backup = tmp_path / "backups" / "corral.db"
    cli = CliRunner()
    with _sqlite_writer(live) as writer:
        writer.wait_for(300)
        before = writer.committed
        out = invoke(cli, "db", "backup", str(backup), "--url", f"sqlite:///{live}")
        after = writer.committed
        writer.wait_for(after + 200)  # the server keeps writing after the backup
    assert "integrity ok" in out
    assert not backup.with_name("corral.db.partial").exists()
    saved = _sqlite_rows(backup)
    _assert_consecutive_snapshot(saved, before - 1, after)
    total = len(_sqlite_rows(live))
    assert total > len(saved)

    restored = tmp_path / "restored.db"
    invoke(cli, "db", "restore", str(backup), "--url", f"sqlite:///{restored}", "--yes")
    assert _sqlite_rows(restored) == saved
    invoke(cli, "db", "restore", str(backup), "--url", f"sqlite:///{live}", "--yes")  # over the live file
    assert _sqlite_rows(live) == saved
    assert invoke(cli, "db", "check", "--url", f"sqlite:///{live}").startswith("sqlite: ok, 1 tables")


def test_sqlite_check_and_restore_reject_damaged_files(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE INDEX t_v ON t (v)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"value-{i}" * 20,) for i in range(2000)])
    data = bytearray(db.read_bytes())
    data[4096 * 3 : 4096 * 3 + 2048] = b"\xff" * 2048  # clobber a page in the middle
    db.write_bytes(bytes(data))
    app, cli = build_app(), CliRunner()
    check = cli.invoke(app, ["db", "check", "--url", f"sqlite:///{db}"])
    assert check.exit_code == 1
    assert "FAILED" in check.output
    target = tmp_path / "target.sqlite"
    restore = cli.invoke(app, ["db", "restore", str(db), "--url", f"sqlite:///{target}", "--yes"])
    assert restore.exit_code == 1 and "restore failed" in restore.output
    assert not target.exists()  # nothing was written
    itself = cli.invoke(app, ["db", "backup", str(db), "--url", f"sqlite:///{db}"])
    assert itself.exit_code == 1 and "the live database itself" in itself.output
    wrong = tmp_path / "not-a-db.txt"
    wrong.write_text("hello")
    result = cli.invoke(app, ["db", "restore", str(wrong), "--url", f"sqlite:///{target}", "--yes"])
    assert result.exit_code == 1 and "not a SQLite database" in result.output


def test_the_database_url_comes_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_DATABASE_URL", raising=False)
    db = tmp_path / "from-config.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
    config = tmp_path / "corral.yaml"
    config.write_text(f"version: 1\ndatabase:\n  url: sqlite:///{db}\n")
    out = invoke(CliRunner(), "db", "check", "--config", str(config), "--json")
    assert '"backend": "sqlite", "ok": true, "tables": 1' in out


def test_password_travels_in_the_environment_not_argv() -> None:
    target, env = libpq_target("postgresql+asyncpg://app:s3cr%40t@db.internal:6543/corral?ssl=require")
    assert target == "postgresql://app@db.internal:6543/corral?sslmode=require"
    assert env == {"PGPASSWORD": "s3cr@t"}


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_postgres_backup_under_write_load_then_restore(postgres_url: str, tmp_path: Path) -> None:
    import asyncpg

    async def query(sql: str) -> list[tuple[int, str]]:
        conn = await asyncpg.connect(postgres_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    asyncio.run(query("CREATE TABLE events (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)"))

    def insert(step: Callable[[], bool]) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(postgres_url)
            row_id = 0
            while True:
                row_id += 1
                await conn.execute("INSERT INTO events (id, payload) VALUES ($1, $2)", row_id, _payload(row_id))
                if not step():
                    break
            await conn.close()

        asyncio.run(run())

    backup = tmp_path / "corral.dump"
    cli = CliRunner()
    with Writer(insert) as writer:
        writer.wait_for(300)
        before = writer.committed
        invoke(cli, "db", "backup", str(backup), "--url", postgres_url)
        after = writer.committed
        writer.wait_for(after + 200)
    assert backup.read_bytes()[:5] == b"PGDMP"  # custom format
    assert len(asyncio.run(query("SELECT id, payload FROM events"))) > after

    out = invoke(cli, "db", "restore", str(backup), "--url", postgres_url, "--yes")
    assert "1 tables" in out
    restored = asyncio.run(query("SELECT id, payload FROM events ORDER BY id"))
    _assert_consecutive_snapshot(restored, before - 1, after)
    assert invoke(cli, "db", "check", "--url", postgres_url).startswith("postgresql: ok, 1 tables")


def test_postgres_failures_are_reported_and_leave_no_file(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    result = CliRunner().invoke(build_app(), ["db", "check", "--url", url])
    assert result.exit_code == 1
    assert "check failed: cannot connect" in result.output
    if shutil.which("pg_dump"):
        backup = tmp_path / "x.dump"
        failed = CliRunner().invoke(build_app(), ["db", "backup", str(backup), "--url", url])
        assert failed.exit_code == 1 and "backup failed: pg_dump failed" in failed.output
        assert list(tmp_path.iterdir()) == []
