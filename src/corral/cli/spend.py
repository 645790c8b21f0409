"""`corral spend`: what the gateway's traffic cost, from a running server's admin API."""

from __future__ import annotations

import json

import typer

from corral.cli.keys import FORMAT_OPTION, MASTER_OPTION, SERVER_OPTION, admin_call, print_table


def register(app: typer.Typer) -> None:
    @app.command("spend")
    def spend(
        group_by: str = typer.Option("key", "--group-by", "-g", help="key, model, day, subject, team or agent."),
        since: str | None = typer.Option(None, "--since", help="ISO 8601 date or time (UTC if no offset)."),
        until: str | None = typer.Option(None, "--until", help="ISO 8601 date or time, exclusive."),
        key_id: str | None = typer.Option(None, "--key", help="Only this key id."),
        server: str = SERVER_OPTION,
        master_key: str | None = MASTER_OPTION,
        output: str = FORMAT_OPTION,
    ) -> None:
        """Spend and tokens grouped by key, model, UTC day, caller (subject), team or agent."""
        if group_by not in ("key", "model", "day", "subject", "team", "agent"):
            typer.secho("--group-by must be key, model, day, subject, team or agent", fg="red", err=True)
            raise typer.Exit(2)
        params = {"group_by": group_by, "since": since, "until": until, "key_id": key_id}
        data = admin_call(server, master_key, "GET", "/admin/spend",
                          params={k: v for k, v in params.items() if v is not None})
        if output == "json":
            typer.echo(json.dumps(data, indent=2))
            return
        print_table(data["data"], [group_by, "requests", "input_tokens", "output_tokens", "cost_usd"])
        typer.echo(f"total: ${data['total_cost_usd']:.6f}")
