"""`corral db`: backup, restore and integrity check of the store.

`db_app()` builds the group; migrations (`db upgrade`, `db current`) are added to the
same group by the store's own module.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="corral.yaml whose database.url to use.")
URL_OPTION = typer.Option(None, "--url", help="Database URL (overrides the config).")


def database_url(config: Path | None, url: str | None) -> str:
    """``--url``, else the config's ``database.url`` (``CORRAL_DATABASE_URL`` applies), else the default."""
    if url:
        return url
    from corral.config.loader import load_config
    from corral.store.engine import default_database_url

    loaded = load_config(config, probe_ollama=False)
    database = loaded.config.database
    if database.url and database.pooler:
        from corral.store.engine import with_pooler

        return with_pooler(database.url, database.pooler)
    return database.url or default_database_url()


def _resolve(config: Path | None, url: str | None) -> str:
    from corral.config.errors import ConfigError

    try:
        return database_url(config, url)
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _add_backup_commands(app: typer.Typer) -> None:
    # The store (SQLAlchemy, Alembic) is imported inside each command: every `corral`
    # invocation builds this group, and most never touch the database.
    @app.command("backup")
    def backup(
        file: Path = typer.Argument(..., help="Backup file to write (SQLite database or pg_dump custom format)."),
        config: Path | None = CONFIG_OPTION,
        url: str | None = URL_OPTION,
    ) -> None:
        """Back up the database; safe while `corral serve` is running."""
        from corral.store.backup import BackupError, backup_database

        try:
            result = backup_database(_resolve(config, url), file)
        except BackupError as exc:
            raise _fail(f"backup failed: {exc}") from None
        detail = f" ({result.tables} tables, integrity ok)" if result else ""
        typer.echo(f"backup written: {file} ({file.stat().st_size} bytes){detail}")

    @app.command("restore")
    def restore(
        file: Path = typer.Argument(..., help="A file written by `corral db backup` (or pg_dump)."),
        config: Path | None = CONFIG_OPTION,
        url: str | None = URL_OPTION,
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    ) -> None:
        """Replace the database's contents with a backup. Stop the servers first."""
        from corral.store.backup import BackupError, restore_database

        target = _resolve(config, url)
        if not yes:
            typer.confirm(f"Replace the contents of the database with {file}?", abort=True)
        try:
            result = restore_database(target, file)
        except BackupError as exc:
            raise _fail(f"restore failed: {exc}") from None
        typer.echo(f"restored {file}: {result.tables} tables, integrity {'ok' if result.ok else 'FAILED'}")

    @app.command("check")
    def check(
        config: Path | None = CONFIG_OPTION,
        url: str | None = URL_OPTION,
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Check the database: SQLite integrity_check, or Postgres reachable with its tables."""
        from corral.store.backup import BackupError, check_database

        try:
            result = check_database(_resolve(config, url))
        except BackupError as exc:
            raise _fail(f"check failed: {exc}") from None
        if as_json:
            typer.echo(json.dumps({"backend": result.backend, "ok": result.ok, "tables": result.tables,
                                   "revision": result.revision, "detail": result.detail}))
        else:
            status = "ok" if result.ok else "FAILED"
            typer.echo(f"{result.backend}: {status}, {result.tables} tables, revision {result.revision or '-'}")
            for line in result.detail:
                typer.echo(f"  {line}")
        if not result.ok:
            raise typer.Exit(1)


def _add_migration_commands(app: typer.Typer) -> None:
    import asyncio

    @app.command("upgrade")
    def upgrade(
        config: Path | None = CONFIG_OPTION,
        url: str | None = URL_OPTION,
        revision: str = typer.Option("head", "--revision", help="Target revision."),
    ) -> None:
        """Apply pending migrations (`corral serve` also does this on start)."""
        from corral.store import migrate
        from corral.store.engine import make_engine

        async def run() -> tuple[str | None, str | None]:
            engine = make_engine(_resolve(config, url))
            try:
                before = await migrate.current(engine)
                return before, await migrate.upgrade(engine, revision)
            finally:
                await engine.dispose()

        before, after = asyncio.run(run())
        typer.echo(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))

    @app.command("current")
    def current(config: Path | None = CONFIG_OPTION, url: str | None = URL_OPTION) -> None:
        """Print the schema revision of the database and the newest one this version ships."""
        from corral.store import migrate
        from corral.store.engine import make_engine

        async def run() -> str | None:
            engine = make_engine(_resolve(config, url))
            try:
                return await migrate.current(engine)
            finally:
                await engine.dispose()

        revision, head = asyncio.run(run()), migrate.head_revision()
        state = "up to date" if revision == head else f"behind (run `corral db upgrade` to reach {head})"
        typer.echo(f"{revision or 'empty'} ({state})")


def db_app() -> typer.Typer:
    app = typer.Typer(help="Database maintenance: migrations, backup, restore, check.", no_args_is_help=True)
    _add_migration_commands(app)
    _add_backup_commands(app)
    return app


def register(app: typer.Typer) -> None:
    app.add_typer(db_app(), name="db")
