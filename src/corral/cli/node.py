"""`corral node`: runs on each worker machine; connects out to the supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import typer

TOKEN_ENV = "CORRAL_FLEET_TOKEN"


def register(app: typer.Typer) -> None:
    @app.command()
    def node(
        config: Path | None = typer.Option(None, "--config", "-c", help="Path to node.yaml."),
        supervisor_url: str | None = typer.Option(None, "--supervisor-url",
                                                  help="ws:// or wss:// URL of the supervisor."),
        node_id: str | None = typer.Option(None, "--node-id", help="This node's id (default: hostname)."),
        token: str | None = typer.Option(None, "--token",
                                         help=f"Shared fleet token (or ${TOKEN_ENV}, or a file named by "
                                              f"${TOKEN_ENV}_FILE).",
                                         show_default=False),
        validate: bool = typer.Option(False, "--validate", help="Check the config and exit 0 (valid) or 1."),
        log_level: str | None = typer.Option(None, "--log-level",
                                             help="debug, info, warning or error (default: $LOG_LEVEL, the "
                                                  "config's log_level, info)."),
        log_format: str | None = typer.Option(None, "--log-format",
                                              help="console or json (default: $LOG_FORMAT, the config's "
                                                   "log_format, console)."),
    ) -> None:
        """Run a fleet node: sessions through native Corral agents or OpenCode, steered by the supervisor."""
        from corral.config.environment import env_secret
        from corral.config.errors import ConfigError
        from corral.config.fleet import NodeConfig, load_fleet_config
        from corral.fleet.logconfig import resolve

        try:
            cfg = load_fleet_config(config, NodeConfig)
        except ConfigError as exc:
            typer.secho(exc.render(), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        if supervisor_url:
            cfg.supervisor_url = supervisor_url
        if node_id:
            cfg.node_id = node_id
        try:
            from_env = env_secret(TOKEN_ENV, os.environ)
        except ValueError as exc:
            typer.secho(f"{TOKEN_ENV}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        secret = token or from_env or (cfg.token.get_secret_value() if cfg.token else None)
        problems = [] if secret else [f"no fleet token: set token in the config, ${TOKEN_ENV} or --token"]
        try:
            level, fmt = resolve(log_level, log_format, os.environ, cfg.log_level, cfg.log_format)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            typer.secho("\n".join(f"{config or 'node'}: {p}" for p in problems), fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        if validate:
            typer.echo(f"{config or '(defaults)'}: valid")
            return
        from corral.telemetry.logging import configure_logging

        configure_logging(level, fmt)
        asyncio.run(_run(cfg, str(secret)))


async def _run(cfg: object, token: str) -> None:
    from corral.config.fleet import NodeConfig
    from corral.fleet.node.client import Node

    assert isinstance(cfg, NodeConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Node(cfg, token).run(stop)
