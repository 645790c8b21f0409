"""`corral serve`: the agent server and LLM gateway."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from corral.config.loader import LoadedConfig


def load_for_serve(config: str | None, *, model: str | None = None) -> LoadedConfig:
    """The config `serve` runs with: the file given, else `$CORRAL_CONFIG` or
    `./corral.yaml`, else zero-config; `model` picks (and checks) the default model."""
    from corral.config.loader import load_config

    return load_config(config, model=model)


def run_server(
    loaded: LoadedConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    config_path: str | None = None,
    model: str | None = None,
    allow_unauthenticated: bool = False,
    boot_summary: dict[str, Any] | None = None,
    log_file: str | None = None,
    watch: bool = False,
) -> None:
    """`boot_summary`: what `corral up` found, shown by `/v1/startup/verification`;
    `watch`: reload the config when its files change (SIGHUP always reloads it)."""
    refuse_open_bind(loaded, host or loaded.config.server.host, loaded.config.server.port if port is None else port,
                     allow_unauthenticated=allow_unauthenticated)
    import uvicorn

    from corral.gateway.app import create_app
    from corral.gateway.asgi import ENV, ServeArgs, ignore_sighup_until_started
    from corral.gateway.reload import ConfigSource, config_hash, watched_files
    from corral.telemetry.logging import configure_logging
    from corral.telemetry.metrics import cleanup_multiprocess, prepare_multiprocess

    server = loaded.config.server
    host = host or server.host
    port = server.port if port is None else port
    workers = workers or server.workers
    log_level = loaded.config.observability.log_level
    try:
        log_config = configure_logging(log_level, loaded.config.observability.log_format, log_file=log_file)
    except ValueError as exc:
        typer.secho(f"corral: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None

    for note in loaded.notes:
        typer.secho(f"corral: {note}", fg=typer.colors.YELLOW, err=True)
    models = ", ".join(sorted(loaded.config.models)) or "(none)"
    typer.secho(f"corral: serving on http://{host}:{port}  models: {models}", err=True)

    _exit_cleanly_after_graceful_shutdown()
    ignore_sighup_until_started()
    tls = server.tls
    common: dict[str, object] = dict(
        host=host, port=port, log_level=log_level, timeout_graceful_shutdown=int(server.shutdown_timeout),
        ssl_certfile=tls.cert_file if tls else None, ssl_keyfile=tls.key_file if tls else None,
        lifespan="on", access_log=False, log_config=log_config,
    )
    if workers > 1:
        # Without Redis the workers share their limits and budgets through one local file.
        shared = None if loaded.config.cache.url else shared_counters_file()
        # The workers are started by import string: they rebuild the app from these arguments.
        os.environ[ENV] = ServeArgs(config_path, model, loaded.config.verification.strict, boot_summary,
                                    workers=workers, shared_counters=str(shared) if shared else None,
                                    watch=watch).to_env()
        # Workers are separate processes: metrics go through prometheus_client's multiprocess files.
        metrics_dir = prepare_multiprocess(workers) if loaded.config.observability.metrics else None
        try:
            run_workers(uvicorn.Config("corral.gateway.asgi:app_from_env", factory=True, workers=workers,
                                       **common))  # type: ignore[arg-type]
        finally:
            cleanup_multiprocess(metrics_dir)
            if shared is not None:
                for path in (shared, shared.with_name(shared.name + "-wal"), shared.with_name(shared.name + "-shm")):
                    path.unlink(missing_ok=True)
    else:
        source = ConfigSource(config_path, model, loaded.config.verification.strict, watch)
        app = create_app(loaded.config, notes=loaded.notes, boot_summary=boot_summary, server_process=True,
                         source=source, config_hash=config_hash(loaded), config_files=watched_files(loaded))
        uvicorn.run(app, **common)  # type: ignore[arg-type]


def shared_counters_file() -> Path:
    from corral.store.engine import data_dir

    return data_dir() / f"limits-{os.getpid()}.db"


def run_workers(config: Any) -> None:
    """What ``uvicorn.run(..., workers=N)`` does, except on SIGHUP: uvicorn's supervisor
    restarts every worker, we pass the signal on and each worker reloads its config in
    place (`corral.gateway.reload`), keeping its connections, streams and counters."""
    from uvicorn.supervisors.multiprocess import Multiprocess

    class ReloadingWorkers(Multiprocess):
        def handle_hup(self) -> None:
            import logging
            import signal

            logging.getLogger("corral.serve").info("SIGHUP: each worker reloads the config")
            for process in self.processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGHUP)

    import contextlib

    sock = config.bind_socket()
    with contextlib.suppress(KeyboardInterrupt):
        ReloadingWorkers(config, sockets=[sock]).run()


def refuse_open_bind(loaded: LoadedConfig, host: str, port: int, *, allow_unauthenticated: bool) -> None:
    """Exit 1 before binding when auth is off and the address is not loopback (see
    `corral.config.exposure`); runs before uvicorn and the app are even imported."""
    from corral.config.exposure import check_bind

    # The gateway falls back to the process environment for the master key; the loaded env
    # also holds the config's .env, already applied to the config by the loader.
    env = {**loaded.env, **os.environ}
    check = check_bind(loaded.config.auth, env, host, port, allow_unauthenticated=allow_unauthenticated)
    for note in check.notes:
        typer.secho(f"corral: warning: {note}", fg=typer.colors.YELLOW, err=True)
    if check.error:
        typer.secho(f"corral: {check.error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


def _exit_cleanly_after_graceful_shutdown() -> None:
    """uvicorn handles SIGTERM/SIGINT itself once it runs (stop accepting, finish in-flight
    requests up to the shutdown timeout, run lifespan shutdown), then re-raises the signal
    into the handler that was installed before it started. This handler exits 0 there
    (service managers expect 0 after a clean stop), and also stops the process at once
    when the signal arrives before uvicorn took over (during startup)."""
    import signal
    import sys

    def _exit(*_: object) -> None:
        sys.exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path | None = typer.Option(None, "--config", "-c", help="Path to corral.yaml."),
        host: str | None = typer.Option(None, "--host", help="Bind address (default from config: 127.0.0.1)."),
        port: int | None = typer.Option(None, "--port", "-p", help="Port (default from config: 8080)."),
        workers: int | None = typer.Option(None, "--workers", "-w", help="Worker processes."),
        model: str | None = typer.Option(None, "--model", "-m",
                                         help="Default model, e.g. openai/gpt-4o-mini (zero-config mode)."),
        strict_providers: bool = typer.Option(False, "--strict-providers",
                                              help="Refuse to start when a required provider fails verification."),
        allow_unauthenticated: bool = typer.Option(
            False, "--allow-unauthenticated",
            help="Listen on a non-loopback address with authentication off (a deliberately open server)."),
        log_file: Path | None = typer.Option(
            None, "--log-file", help="Write the log to this file (appended; reopened after logrotate moves it)."),
        watch: bool = typer.Option(
            False, "--watch",
            help="Reload the config when it (or its .env, or an agent's instructions file) changes; SIGHUP "
                 "always reloads it. Requests and streams in flight are not interrupted."),
    ) -> None:
        """Serve agents and models over OpenAI-, Anthropic- and A2A-compatible APIs."""
        from corral.config.errors import ConfigError

        path = str(config) if config else None
        try:
            loaded = load_for_serve(path, model=model)
        except ConfigError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        if strict_providers:
            loaded.config.verification.strict = True
        run_server(loaded, host=host, port=port, workers=workers, config_path=path, model=model,
                   allow_unauthenticated=allow_unauthenticated, log_file=str(log_file) if log_file else None,
                   watch=watch)
