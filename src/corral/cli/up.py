"""`corral up`: bring up or verify the services in dependency order, then serve."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import typer

from corral.boot.launch import Launcher
from corral.boot.manager import BootManager, BootReport, boot_summary
from corral.boot.specs import ServiceSpec, env_prefix, unknown_overrides
from corral.boot.status import probe_client
from corral.cli._services import CONFIG_OPTION_HELP, boot_table, console, environment, load, specs_for, stack_dirs
from corral.cli.status import StatusFormat


async def boot(specs: list[ServiceSpec], launcher: Launcher, *, strict: bool, deadline: float | None,
               quiet: bool) -> BootReport:
    err = console(stderr=True)

    def progress(name: str, message: str) -> None:
        if not quiet:
            err.print(f"[dim]boot[/] {name}: {message}", highlight=False, markup=True)

    async with probe_client() as http:
        manager = BootManager(specs, http=http, launcher=launcher, strict=strict, deadline=deadline,
                              progress=progress)
        return await manager.run()


def fixes(report: BootReport) -> list[str]:
    """One line per failed service: what to do about it."""
    lines = []
    for outcome in report.failed_required + [o for o in report.outcomes if o.outcome.value == "failed"
                                             and not o.spec.required]:
        spec, prefix = outcome.spec, env_prefix(outcome.spec.name)
        if outcome.status is not None and outcome.status.value == "rejected":
            fix = f"fix the credentials or database name in {spec.source} ({spec.address})"
        elif spec.remote:
            fix = f"check that {spec.address} is reachable from here (firewall, {prefix}HOST/{prefix}PORT)"
        elif spec.start is None:
            fix = (f"start it, add a start: command or compose_service for it, or set {prefix}HOST/"
                   f"{prefix}PORT (or {prefix}REMOTE=true) if it runs elsewhere")
        else:
            fix = f"see the start output in the service log, or set {prefix}REMOTE=true if it runs elsewhere"
        lines.append(f"{spec.name}: {fix}")
    return lines


async def hold(launcher: Launcher) -> None:
    """Keep the commands we started running until SIGINT/SIGTERM, then stop them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await launcher.stop_all()


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        config: Path | None = typer.Option(None, "--config", "-c", help=CONFIG_OPTION_HELP),
        only_deps: bool = typer.Option(False, "--only-deps", help="Bring up/verify the services, do not serve."),
        strict: bool = typer.Option(True, "--strict-dependencies/--no-strict-dependencies",
                                    help="Refuse to go on when a required service fails (off: degraded start)."),
        deadline: float | None = typer.Option(None, "--deadline", min=0.1,
                                              help="Overall seconds for the whole boot."),
        detach: bool = typer.Option(False, "--detach",
                                    help="Leave started commands running after exit (pid files in the data dir)."),
        output: StatusFormat = typer.Option(StatusFormat.table, "--format", "-f", help="Summary format."),
        host: str | None = typer.Option(None, "--host", help="Bind address for serving."),
        port: int | None = typer.Option(None, "--port", "-p", help="Port for serving."),
        workers: int | None = typer.Option(None, "--workers", "-w", help="Worker processes for serving."),
    ) -> None:
        """Bring up or verify the services Corral depends on, in dependency order, then serve."""
        loaded = load(config)
        specs = specs_for(loaded)
        for variable in unknown_overrides(specs, environment(loaded)):
            typer.secho(f"corral: warning: {variable} names no configured service", fg=typer.colors.YELLOW, err=True)
        run_dir, log_dir = stack_dirs()
        launcher = Launcher(log_dir=log_dir, run_dir=run_dir, detach=detach)
        try:
            report = asyncio.run(boot(specs, launcher, strict=strict, deadline=deadline,
                                      quiet=output is StatusFormat.json))
        except KeyboardInterrupt:
            # Started commands live in their own session: Ctrl-C reached only us, so stop them.
            asyncio.run(launcher.stop_all())
            typer.secho("corral: boot interrupted", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None
        _print_report(report, output)
        if report.blocked:
            for line in fixes(report):
                typer.secho(f"  fix: {line}", fg=typer.colors.YELLOW, err=True)
            if strict:
                names = ", ".join(o.spec.name for o in report.failed_required)
                typer.secho(f"corral: BOOT BLOCKED: {len(report.failed_required)} required service(s) failed: "
                            f"{names} (use --no-strict-dependencies to start degraded)", fg=typer.colors.RED, err=True)
                asyncio.run(launcher.stop_all())
                raise typer.Exit(1)
            typer.secho("corral: starting degraded (--no-strict-dependencies)", fg=typer.colors.YELLOW, err=True)
        running = [x for x in launcher.launched if x.process is not None]
        if only_deps:
            if running and not detach:
                typer.secho(f"corral: holding {len(running)} started service(s); Ctrl-C stops them", err=True)
                asyncio.run(hold(launcher))
            launcher.release()  # detached commands keep running (pid files in the data dir)
            return
        from corral.cli.serve import run_server

        try:
            run_server(loaded, host=host, port=port, workers=workers,
                       config_path=str(config) if config else None, boot_summary=boot_summary(report))
        finally:
            asyncio.run(launcher.stop_all())


def _print_report(report: BootReport, output: StatusFormat) -> None:
    if output is StatusFormat.json:
        typer.echo(json.dumps(boot_summary(report), indent=2))
        return
    out = console(stderr=True)
    if report.outcomes:
        out.print(boot_table(report))
    counts = report.counts()
    out.print(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()) + f" in {report.duration_ms:.0f} ms")
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
