"""The pooler setting: how a URL or ``database.pooler`` turns it on, and what it changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from corral.cli.main import build_app
from corral.store.backup import libpq_target
from corral.store.engine import PoolerError, make_engine, pooler_connect_args, split_pooler, with_pooler, without_pooler
from corral.store.migrate import SHIPPED_HEAD


def test_the_url_parameter_names_the_pooler_and_is_not_passed_on() -> None:
    url, pooler = split_pooler(make_url("postgresql+asyncpg://u@db:6432/corral?pooler=pgbouncer&ssl=require"))
    assert pooler == "pgbouncer"
    assert dict(url.query) == {"ssl": "require"}


def test_the_config_setting_and_the_url_agree_and_unknown_poolers_are_refused() -> None:
    assert split_pooler(make_url("postgresql://db/corral"), "pgbouncer")[1] == "pgbouncer"
    assert split_pooler(make_url("postgresql://db/corral"))[1] is None
    with pytest.raises(PoolerError, match="unknown database pooler 'pgpool'"):
        split_pooler(make_url("postgresql://db/corral?pooler=pgpool"))
    with pytest.raises(PoolerError, match="for Postgres, not sqlite"):
        make_engine("sqlite:///x.db", pooler="pgbouncer")


def test_behind_pgbouncer_no_statement_outlives_its_transaction() -> None:
    args = pooler_connect_args("pgbouncer")
    names = {args["prepared_statement_name_func"]() for _ in range(1000)}
    assert args["statement_cache_size"] == 0 and args["prepared_statement_cache_size"] == 0
    assert len(names) == 1000 and all(n.startswith("__asyncpg_") and n.endswith("__") for n in names)
    assert pooler_connect_args(None) == {}


def test_other_clients_get_the_url_without_the_parameter() -> None:
    url = with_pooler("postgresql://u:p%40ss@db:6432/corral?sslmode=require", "pgbouncer")
    assert make_url(url).query == {"sslmode": "require", "pooler": "pgbouncer"}
    assert without_pooler(url) == "postgresql://u:p%40ss@db:6432/corral?sslmode=require"
    target, env = libpq_target(url)
    assert target == "postgresql://u@db:6432/corral?sslmode=require" and env == {"PGPASSWORD": "p@ss"}


@pytest.mark.postgres
def test_db_commands_work_through_pgbouncer(pgbouncer_url: str, tmp_path: Path) -> None:
    """Migrations and the integrity check, through a real transaction-mode PgBouncer,
    with the pooler named by the config (`database.pooler`)."""
    config = tmp_path / "corral.yaml"
    config.write_text(f"database:\n  url: {pgbouncer_url}\n  pooler: pgbouncer\n")
    runner = CliRunner()
    upgrade = runner.invoke(build_app(), ["db", "upgrade", "--config", str(config)])
    assert upgrade.exit_code == 0, upgrade.output
    assert f"database at revision {SHIPPED_HEAD} (was empty)" in upgrade.output
    check = runner.invoke(build_app(), ["db", "check", "--config", str(config)])
    assert check.exit_code == 0, check.output
    assert f"revision {SHIPPED_HEAD}" in check.output
