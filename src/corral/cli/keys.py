"""`corral keys`: virtual keys, through a running server's admin API.

Going through the server (not the database) means the change reaches every replica's
key cache at once. The server is ``--server`` or ``$CORRAL_URL`` (default
http://127.0.0.1:8080); the master key is ``--master-key`` or ``$CORRAL_MASTER_KEY``.
"""

from __future__ import annotations

import json
from typing import Any

import typer

SERVER_OPTION = typer.Option("http://127.0.0.1:8080", "--server", envvar="CORRAL_URL", help="Corral server URL.")
MASTER_OPTION = typer.Option(None, "--master-key", envvar="CORRAL_MASTER_KEY", help="The master key.")
FORMAT_OPTION = typer.Option("table", "--format", "-f", help="table or json.")


def admin_call(server: str, master_key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    if not master_key:
        typer.secho("the admin API needs the master key: --master-key or CORRAL_MASTER_KEY", fg="red", err=True)
        raise typer.Exit(2)
    try:
        response = httpx.request(method, f"{server.rstrip('/')}{path}", timeout=30,
                                 headers={"authorization": f"Bearer {master_key}"}, **kwargs)
    except httpx.HTTPError as exc:
        typer.secho(f"cannot reach {server}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        typer.secho(f"error {response.status_code}: {message}", fg="red", err=True)
        raise typer.Exit(1)
    return response.json()


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    # Piped output keeps whole values (ids, prefixes) instead of cutting them to 80 columns.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _emit(data: Any, output: str, columns: list[str]) -> None:
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
    else:
        rows = data["data"] if isinstance(data, dict) and "data" in data else [data]
        print_table(rows, columns)


KEY_COLUMNS = ["id", "key_prefix", "name", "models", "max_budget", "budget_duration", "spend", "rpm", "tpm",
               "expires_at", "disabled", "revoked_at"]
# --clear NAME: the value that removes the setting
CLEARABLE: dict[str, Any] = {"name": None, "team": None, "models": [], "max-budget": None, "budget-duration": None,
                             "rpm": None, "tpm": None, "model-limits": {}, "expires-at": None, "metadata": {}}
CLEARABLE_FIELDS = {c: "team_id" if c == "team" else c.replace("-", "_") for c in CLEARABLE}


def keys_app() -> typer.Typer:
    app = typer.Typer(help="Virtual API keys (through the admin API).", no_args_is_help=True)

    @app.command("create")
    def create(
        name: str | None = typer.Option(None, "--name"),
        models: list[str] = typer.Option([], "--model", "-m", help="Allowed model (repeat); none: all."),
        max_budget: float | None = typer.Option(None, "--max-budget", help="USD per budget period."),
        budget_duration: str | None = typer.Option(None, "--budget-duration", help="e.g. 1d, 30d; none: lifetime."),
        rpm: int | None = typer.Option(None, "--rpm"),
        tpm: int | None = typer.Option(None, "--tpm"),
        expires_at: str | None = typer.Option(None, "--expires-at", help="ISO 8601 time."),
        team_id: str | None = typer.Option(None, "--team"),
        metadata: str | None = typer.Option(None, "--metadata", help="JSON object."),
        server: str = SERVER_OPTION,
        master_key: str | None = MASTER_OPTION,
        output: str = FORMAT_OPTION,
    ) -> None:
        """Create a key. The key is printed once and never stored in clear."""
        body: dict[str, Any] = {"name": name, "models": models, "max_budget": max_budget,
                                "budget_duration": budget_duration, "rpm": rpm, "tpm": tpm,
                                "expires_at": expires_at, "team_id": team_id}
        if metadata:
            body["metadata"] = json.loads(metadata)
        created = admin_call(server, master_key, "POST", "/admin/keys",
                             json={k: v for k, v in body.items() if v not in (None, [])})
        if output == "json":
            typer.echo(json.dumps(created, indent=2))
        else:
            typer.echo(f"id:  {created['id']}\nkey: {created['key']}\n(store the key now: it is not shown again)")

    @app.command("list")
    def list_keys(
        include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
        server: str = SERVER_OPTION,
        master_key: str | None = MASTER_OPTION,
        output: str = FORMAT_OPTION,
    ) -> None:
        """List keys (prefix, limits, current spend)."""
        data = admin_call(server, master_key, "GET", "/admin/keys",
                          params={"include_revoked": "true" if include_revoked else "false"})
        _emit(data, output, KEY_COLUMNS)

    @app.command("update")
    def update(
        key_id: str,
        name: str | None = typer.Option(None, "--name"),
        models: list[str] = typer.Option([], "--model", "-m", help="Allowed model (repeat); replaces the list."),
        max_budget: float | None = typer.Option(None, "--max-budget", help="USD per budget period."),
        budget_duration: str | None = typer.Option(None, "--budget-duration", help="e.g. 1d, 30d."),
        rpm: int | None = typer.Option(None, "--rpm"),
        tpm: int | None = typer.Option(None, "--tpm"),
        expires_at: str | None = typer.Option(None, "--expires-at", help="ISO 8601 time."),
        team_id: str | None = typer.Option(None, "--team"),
        metadata: str | None = typer.Option(None, "--metadata", help="JSON object (replaces the metadata)."),
        disabled: bool | None = typer.Option(None, "--disable/--enable", help="Refuse the key, or accept it again."),
        clear: list[str] = typer.Option([], "--clear", help=f"Remove a setting (repeat): {', '.join(CLEARABLE)}."),
        server: str = SERVER_OPTION,
        master_key: str | None = MASTER_OPTION,
        output: str = FORMAT_OPTION,
    ) -> None:
        """Change a key's name, limits, budget, models, expiry, or disable/enable it (same id and secret)."""
        unknown = [c for c in clear if c not in CLEARABLE]
        if unknown:
            typer.secho(f"--clear takes {', '.join(CLEARABLE)}; not {', '.join(unknown)}", fg="red", err=True)
            raise typer.Exit(2)
        body: dict[str, Any] = {CLEARABLE_FIELDS[c]: CLEARABLE[c] for c in clear}
        given = {"name": name, "models": models or None, "max_budget": max_budget, "budget_duration": budget_duration,
                 "rpm": rpm, "tpm": tpm, "expires_at": expires_at, "team_id": team_id, "disabled": disabled,
                 "metadata": json.loads(metadata) if metadata else None}
        body.update({k: v for k, v in given.items() if v is not None})
        if not body:
            typer.secho("nothing to change: give an option (see --help)", fg="red", err=True)
            raise typer.Exit(2)
        updated = admin_call(server, master_key, "PATCH", f"/admin/keys/{key_id}", json=body)
        _emit(updated, output, KEY_COLUMNS)

    @app.command("revoke")
    def revoke(key_id: str, server: str = SERVER_OPTION, master_key: str | None = MASTER_OPTION) -> None:
        """Revoke a key on every replica."""
        admin_call(server, master_key, "DELETE", f"/admin/keys/{key_id}")
        typer.echo(f"revoked {key_id}")

    @app.command("rotate")
    def rotate(
        key_id: str, server: str = SERVER_OPTION, master_key: str | None = MASTER_OPTION, output: str = FORMAT_OPTION
    ) -> None:
        """Give a key a new secret (same id, limits and spend); the old secret stops working."""
        rotated = admin_call(server, master_key, "POST", f"/admin/keys/{key_id}/rotate")
        if output == "json":
            typer.echo(json.dumps(rotated, indent=2))
        else:
            typer.echo(f"id:  {rotated['id']}\nkey: {rotated['key']}\n(store the key now: it is not shown again)")

    return app


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app(), name="keys")
