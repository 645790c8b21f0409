"""`corral supervisor`: the fleet hub (WebSocket for nodes, HTTP API for people and tools)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import typer

TOKEN_ENV = "CORRAL_FLEET_TOKEN"
WATCH_INTERVAL_SECONDS = 1.0


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def supervisor(
        config: Path | None = typer.Option(None, "--config", "-c", help="Path to supervisor.yaml."),
        port: int | None = typer.Option(None, "--port", help="WebSocket port for nodes (default 8420)."),
        http_port: int | None = typer.Option(None, "--http-port", help="HTTP API port (default 8421; 0 disables)."),
        host: str | None = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
        token: str | None = typer.Option(None, "--token",
                                         help=f"Shared fleet token (or ${TOKEN_ENV}, or a file named by "
                                              f"${TOKEN_ENV}_FILE).",
                                         show_default=False),
        validate: bool = typer.Option(False, "--validate", help="Check the config and exit 0 (valid) or 1."),
        watch: bool = typer.Option(False, "--watch", help="Reload the config file when it changes (SIGHUP always "
                                                          "reloads)."),
        log_level: str | None = typer.Option(None, "--log-level",
                                             help="debug, info, warning or error (default: $LOG_LEVEL, the "
                                                  "config's log_level, info)."),
        log_format: str | None = typer.Option(None, "--log-format",
                                              help="console or json (default: $LOG_FORMAT, the config's "
                                                   "log_format, console)."),
    ) -> None:
        """Run the fleet supervisor: node registry, sessions, events, commands, policies, cost, alerts, audit."""
        from corral.config.environment import env_secret
        from corral.config.errors import ConfigError
        from corral.config.fleet import SupervisorConfig, load_fleet_config
        from corral.fleet.logconfig import resolve

        try:
            cfg = load_fleet_config(config, SupervisorConfig)
        except ConfigError as exc:
            raise _fail(exc.render()) from None
        overrides: dict[str, Any] = {k: v for k, v in (("port", port), ("http_port", http_port), ("host", host))
                                     if v is not None}
        cfg.server = cfg.server.model_copy(update=overrides)
        try:
            from_env = env_secret(TOKEN_ENV, os.environ)
        except ValueError as exc:
            raise _fail(f"{TOKEN_ENV}: {exc}") from None
        secret = token or from_env or (cfg.auth.token.get_secret_value() if cfg.auth.token else None)
        problems = []
        if not secret:
            empty = f" ({TOKEN_ENV} is set but empty)" if os.environ.get(TOKEN_ENV) == "" else ""
            problems.append(f"no fleet token{empty}: set auth.token, ${TOKEN_ENV} or --token")
        elif len(secret) < 16:
            problems.append("the fleet token must be at least 16 characters")
        if cfg.tls is not None:
            problems += [f"tls.{k}: {p} is not a readable file" for k, p in
                         (("cert", cfg.tls.cert), ("key", cfg.tls.key)) if not Path(p).is_file()]
        if watch and config is None:
            problems.append("--watch needs --config")
        try:
            level, fmt = resolve(log_level, log_format, os.environ, cfg.log_level, cfg.log_format)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise _fail("\n".join(f"{config or 'supervisor'}: {p}" for p in problems))
        if validate:
            typer.echo(f"{config or '(defaults)'}: valid")
            return
        from corral.telemetry.logging import configure_logging

        configure_logging(level, fmt)
        asyncio.run(_run(cfg, str(secret), config, overrides, watch))


async def _run(cfg: object, token: str, path: Path | None, overrides: dict[str, Any], watch: bool) -> None:
    from corral.config.fleet import SupervisorConfig
    from corral.fleet.supervisor.app import Supervisor, run_supervisor
    from corral.process import settle_after_startup

    assert isinstance(cfg, SupervisorConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sup = Supervisor(cfg, token, config_path=path, server_overrides=overrides,
                     watch_interval=WATCH_INTERVAL_SECONDS if watch else None)
    loop.add_signal_handler(signal.SIGHUP, sup.request_reload, "SIGHUP")
    await run_supervisor(sup, stop, on_started=settle_after_startup)
