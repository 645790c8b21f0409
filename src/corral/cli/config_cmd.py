"""``corral validate``, ``corral schema`` and ``corral config show``."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from corral.config.errors import ConfigError
from corral.config.loaded import LoadedConfig
from corral.config.loader import load_config
from corral.config.redact import redacted_dump
from corral.config.schema import CorralConfig

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class CheckFormat(StrEnum):
    text = "text"
    json = "json"


class ShowFormat(StrEnum):
    yaml = "yaml"
    json = "json"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(loaded: LoadedConfig) -> dict[str, Any]:
    config = loaded.config
    return {
        "ok": True,
        "file": str(loaded.path) if loaded.path else None,
        "zero_config": loaded.zero_config,
        "providers": [name for name, p in config.providers.items() if p.enabled],
        "disabled_providers": [name for name, p in config.providers.items() if not p.enabled],
        "models": list(config.models),
        "agents": list(config.agents),
        "default_model": config.default_model,
        "notes": loaded.notes,
        "errors": [],
    }


def validate_command(
    file: Path | None = typer.Argument(None, help="Config file (default: ./corral.yaml, then $CORRAL_CONFIG)."),
    output: CheckFormat = typer.Option(CheckFormat.text, "--format", "-f", help="Output format."),
) -> None:
    """Check a config file and report every problem with its file:line."""
    try:
        loaded = load_config(file)
    except ConfigError as exc:
        if output is CheckFormat.json:
            shown = str(file) if file else None
            typer.echo(json.dumps({"ok": False, "file": shown, "errors": [i.to_dict() for i in exc.issues],
                                   "notes": []}, indent=2))
        else:
            typer.echo(exc.render())
            typer.echo(f"{_plural(len(exc.issues), 'error')} found", err=True)
        raise typer.Exit(1) from None
    summary = _summary(loaded)
    if output is CheckFormat.json:
        typer.echo(json.dumps(summary, indent=2))
        return
    where = summary["file"] or "zero-config (no config file)"
    counts = ", ".join([_plural(len(summary["providers"]), "provider"), _plural(len(summary["models"]), "model"),
                        _plural(len(summary["agents"]), "agent")])
    typer.echo(f"ok: {where}: {counts}; default model: {summary['default_model'] or 'none'}")
    for note in loaded.notes:
        typer.echo(f"note: {note}")


def schema_command() -> None:
    """Print the JSON Schema of corral.yaml (for editors and CI)."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **CorralConfig.model_json_schema()}
    typer.echo(json.dumps(schema, indent=2))


def show_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file (default: ./corral.yaml, "
                                       "then $CORRAL_CONFIG, else zero-config)."),
    output: ShowFormat = typer.Option(ShowFormat.yaml, "--format", "-f", help="Output format."),
) -> None:
    """Print the effective config (after ${VAR} substitution and env overrides), secrets masked."""
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(1) from None
    data = redacted_dump(loaded.config)
    if output is ShowFormat.json:
        for note in loaded.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(json.dumps(data, indent=2))
        return
    from ruamel.yaml import YAML

    source = str(loaded.path) if loaded.path else "zero-config (no config file)"
    typer.echo(f"# effective config from {source}")
    for note in loaded.notes:
        typer.echo(f"# note: {note}")
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep the schema's order
    yaml.dump(data, sys.stdout)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
    app.command("schema")(schema_command)
    group = typer.Typer(name="config", help="Inspect the effective configuration.", no_args_is_help=True)
    group.command("show")(show_command)
    app.add_typer(group, name="config")
