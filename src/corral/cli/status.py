"""`corral status`: probe every service once and tell the truth about each."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path

import typer

from corral.boot.processes import ProcessTable
from corral.boot.specs import ServiceSpec, unknown_overrides
from corral.boot.status import ServiceCheck, check_services, probe_client
from corral.cli._services import (
    CONFIG_OPTION_HELP,
    console,
    environment,
    load,
    no_services_note,
    specs_for,
    stack_dirs,
    status_table,
)


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


async def gather_status(specs: list[ServiceSpec], processes: ProcessTable | None = None) -> list[ServiceCheck]:
    async with probe_client() as http:
        return await check_services(specs, http=http, processes=processes)


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        config: Path | None = typer.Option(None, "--config", "-c", help=CONFIG_OPTION_HELP),
        output: StatusFormat = typer.Option(StatusFormat.table, "--format", "-f", help="Output format."),
    ) -> None:
        """Probe every service once; exit code 1 when a required one is not up."""
        loaded = load(config)
        specs = specs_for(loaded)
        checks = asyncio.run(gather_status(specs, ProcessTable(stack_dirs()[0])))
        failing = [c for c in checks if c.failing]
        stray = unknown_overrides(specs, environment(loaded))
        if output is StatusFormat.json:
            typer.echo(json.dumps({
                "ok": not failing,
                "services": [c.to_dict() for c in checks],
                "unknown_overrides": stray,
            }, indent=2))
        else:
            out = console()
            if checks:
                out.print(status_table(checks))
            else:
                out.print(no_services_note(loaded))
            for variable in stray:
                out.print(f"[yellow]warning:[/] {variable} names no configured service")
            if failing:
                names = ", ".join(c.spec.name for c in failing)
                out.print(f"[red]{len(failing)} required service(s) not up: {names}[/]")
        if failing:
            raise typer.Exit(1)
