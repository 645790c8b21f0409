"""`corral verify`: check every enabled provider now and print the ranked report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from corral.config.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command()
    def verify(
        config: Path | None = typer.Option(None, "--config", "-c", help="Path to corral.yaml."),
        output: str = typer.Option("table", "--format", "-f", help="table or json."),
        completion: bool = typer.Option(False, "--completion", help="Also send one minimal completion each."),
    ) -> None:
        """Verify providers (keys accepted, reachable, models offered) and rank them.

        Exits 1 when any provider fails."""
        from corral.cli.serve import load_for_serve
        from corral.llm.registry import build_provider
        from corral.llm.verify import verify_providers

        try:
            loaded = load_for_serve(str(config) if config else None)
        except ConfigError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        cfg = loaded.config
        cfg.verification.completion_check = completion or cfg.verification.completion_check

        async def run() -> dict[str, object]:
            providers = {n: build_provider(n, p) for n, p in cfg.providers.items() if p.enabled}
            try:
                return (await verify_providers(providers, cfg)).to_json()
            finally:
                for p in providers.values():
                    await p.aclose()

        report = asyncio.run(run())
        if output == "json":
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_table(report)
        summary = report["summary"]
        assert isinstance(summary, dict)
        raise typer.Exit(1 if summary["failed"] else 0)


def _print_table(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Provider verification")
    for column in ("rank", "provider", "type", "status", "latency ms", "models", "score", "detail"):
        table.add_column(column)
    providers = report["providers"]
    assert isinstance(providers, list)
    for p in providers:
        colour = "green" if p["status"] == "ok" else ("yellow" if p["ok"] else "red")
        table.add_row(
            str(p["rank"] or "-"), p["name"], p["type"], f"[{colour}]{p['status']}[/{colour}]",
            f"{p['latency_ms']:.0f}" if p["latency_ms"] is not None else "-",
            str(p["models_listed"] if p["models_listed"] is not None else "-"), f"{p['score']:.1f}", p["detail"],
        )
    Console().print(table)
