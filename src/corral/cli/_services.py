"""Shared by `corral up`, `status`, `monitor` and `doctor`: load the config, resolve the
services it depends on, and render service tables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from corral.boot.specs import ServiceSpec, ServiceSpecError, effective_services

if TYPE_CHECKING:
    from corral.boot.manager import BootReport
    from corral.boot.status import ServiceCheck
    from corral.config.loaded import LoadedConfig

CONFIG_OPTION_HELP = "Path to corral.yaml (default: ./corral.yaml, then $CORRAL_CONFIG)."

STATUS_STYLES = {
    "up": "green", "down": "red", "starting": "yellow", "rejected": "red bold", "unhealthy": "red",
    "disabled": "dim", "started": "green", "remote": "green", "already_running": "green", "failed": "red bold",
    "skipped": "dim",
}


def load(config: Path | None) -> LoadedConfig:
    """The loaded config, or exit 2 with every problem listed (file:line key: message)."""
    from corral.config.errors import ConfigError
    from corral.config.loader import load_config

    try:
        return load_config(config, probe_ollama=False)
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def environment(loaded: LoadedConfig) -> Mapping[str, str]:
    return loaded.env or os.environ


def specs_for(loaded: LoadedConfig) -> list[ServiceSpec]:
    try:
        return effective_services(loaded.config, environment(loaded))
    except ServiceSpecError as exc:
        typer.secho(f"corral: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def stack_dirs() -> tuple[Path, Path]:
    """(run dir, log dir) of what `corral up` starts: process records and command output."""
    from corral.store.engine import data_dir

    base = data_dir()
    return base / "run", base / "logs"


def console(*, stderr: bool = False) -> Console:
    # Wide enough that details are not cut off when output is piped or captured.
    return Console(stderr=stderr, width=None if _is_tty(stderr) else 160, soft_wrap=False)


def _is_tty(stderr: bool) -> bool:
    import sys

    stream = sys.stderr if stderr else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def styled(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def status_table(checks: list[ServiceCheck], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    runs_as = any(check.runs_as for check in checks)
    columns = ("service", "kind", "status", "latency ms", "detail") + (("runs as",) if runs_as else ())
    for column in columns:
        table.add_column(column, overflow="fold", justify="right" if column == "latency ms" else "left")
    for check in checks:
        latency = check.result.latency_ms if check.result else None
        name = check.spec.name + ("" if check.spec.required else " (optional)")
        kind = check.spec.health_kind + (" remote" if check.spec.remote else "")
        row: list[str | Text] = [name, kind, styled(check.status), f"{latency:.1f}" if latency is not None else "-",
                                 check.result.detail if check.result else "disabled"]
        if runs_as:
            row.append(check.runs_as or "-")
        table.add_row(*row)
    return table


def boot_table(report: BootReport) -> Table:
    table = Table(title="boot summary", title_justify="left")
    for column in ("service", "kind", "outcome", "probes", "latency ms", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column in ("probes", "latency ms") else "left")
    for outcome in report.outcomes:
        latency = outcome.latency_ms
        name = outcome.spec.name + ("" if outcome.spec.required else " (optional)")
        table.add_row(name, outcome.spec.health_kind, styled(outcome.outcome.value), str(outcome.attempts),
                      f"{latency:.1f}" if latency is not None else "-", outcome.detail)
    return table


def no_services_note(loaded: LoadedConfig) -> str:
    database = "sqlite" if not (loaded.config.database.url or "").startswith("postgres") else "postgres"
    cache = "redis" if loaded.config.cache.url else "in-process"
    return f"no services to check (database: {database}, cache: {cache}; add a services: section to declare more)"
