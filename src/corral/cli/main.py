"""The `corral` command. Each command group lives in its own module and registers
itself on the root app through `register(app)`."""

from __future__ import annotations

import importlib

import typer

from corral import __version__

# Modules under corral.cli that define `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "serve",
    "verify",
    "config_cmd",
    "generate",
    "db",
    "supervisor",
    "node",
    "ctl",
    "up",
    "status",
    "monitor",
    "stack",
    "doctor",
    "keys",
    "spend",
    "knowledge",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corral {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="corral",
        help="A self-hosted control plane for LLM agents.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    ) -> None:
        """Corral: agent server and LLM gateway, fleet supervisor, boot manager."""

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"corral.cli.{name}")
        module.register(app)
    return app


def main() -> None:
    build_app()()
