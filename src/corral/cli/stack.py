"""`corral logs`, `restart`, `down` and `clean`: the stack `corral up` brought up.

Commands `corral up` started are found through their process records in the data dir,
so these work from any terminal; compose services go through ``docker compose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from corral.boot.containers import compose_base, is_container
from corral.boot.lifecycle import Stack, StackError, Step
from corral.boot.specs import ServiceSpec
from corral.boot.status import probe_client
from corral.cli._services import CONFIG_OPTION_HELP, load, specs_for, stack_dirs

CONFIG_OPTION = typer.Option(None, "--config", "-c", help=CONFIG_OPTION_HELP)
FOLLOW_POLL = 0.2  # seconds between looks at a followed log file


def _stack(config: Path | None) -> Stack:
    run_dir, log_dir = stack_dirs()
    return Stack(specs_for(load(config)), run_dir=run_dir, log_dir=log_dir)


def _select(stack: Stack, service: str | None) -> list[str]:
    try:
        return stack.select(service)
    except StackError as exc:
        typer.secho(f"corral: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _report(steps: list[Step]) -> None:
    if not steps:
        typer.echo("nothing that corral up started is left to act on")
    for step in steps:
        colour = typer.colors.GREEN if step.ok else typer.colors.RED
        typer.secho(f"{step.name}: {step.detail}", fg=colour)
    if any(not step.ok for step in steps):
        raise typer.Exit(1)


def _tail(path: Path, lines: int) -> list[str]:
    if lines == 0:
        return path.read_text(errors="replace").splitlines()
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, max(4096, lines * 512))
        while True:
            handle.seek(size - block)
            data = handle.read()
            if data.count(b"\n") > lines or block == size:
                break
            block = min(size, block * 2)
    return data.decode(errors="replace").splitlines()[-lines:]


class _Follower:
    """New lines of one log file, across truncation and rotation (a new file at the path)."""

    def __init__(self, name: str, path: Path, prefix: str) -> None:
        self.name, self.path, self.prefix = name, path, prefix
        self.offset = path.stat().st_size if path.exists() else 0
        self.inode = path.stat().st_ino if path.exists() else None
        self.partial = b""

    def lines(self) -> Iterator[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            self.inode, self.offset, self.partial = stat.st_ino, 0, b""
        if stat.st_size == self.offset:
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = self.partial + handle.read()
            self.offset = handle.tell()
        *complete, self.partial = data.split(b"\n")
        for line in complete:
            yield self.prefix + line.decode(errors="replace")


def _print_logs(stack: Stack, names: list[str], lines: int, prefixed: bool) -> bool:
    ok = True
    for name in names:
        spec = stack.spec(name)
        if spec is not None and is_container(spec):
            ok = _compose_logs(spec, ["--tail", str(lines)] if lines else []) == 0 and ok
            continue
        path = stack.log_path(name)
        if not path.exists():
            typer.secho(f"{name}: no log yet ({path})", fg=typer.colors.YELLOW, err=True)
            continue
        prefix = f"{name} | " if prefixed else ""
        for line in _tail(path, lines):
            typer.echo(prefix + line)
    return ok


def _compose_logs(spec: ServiceSpec, extra: list[str], *, follow: bool = False) -> int:
    assert spec.start is not None
    argv = [*compose_base(spec.start, "docker"), "logs", "--no-color", *extra]
    if follow:
        argv.append("--follow")
    argv.append(str(spec.start.compose_service))
    try:
        return subprocess.call(argv, cwd=spec.start.cwd)
    except FileNotFoundError:
        typer.secho(f"{spec.name}: docker is not installed", fg=typer.colors.RED, err=True)
        return 1


def _follow(stack: Stack, names: list[str], prefixed: bool, lines: int) -> None:
    """The last ``lines`` lines, then new ones until Ctrl-C or SIGTERM (which end it with
    status 0); compose services through `docker compose logs -f`."""
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, _stop)
    followers = []
    compose: list[subprocess.Popen[bytes]] = []
    for name in names:
        spec = stack.spec(name)
        if spec is not None and is_container(spec) and spec.start is not None:
            argv = [*compose_base(spec.start, "docker"), "logs", "--no-color", "--follow", "--tail", "0",
                    str(spec.start.compose_service)]
            with contextlib.suppress(FileNotFoundError):
                compose.append(subprocess.Popen(argv, cwd=spec.start.cwd))
            continue
        followers.append(_Follower(name, stack.log_path(name), f"{name} | " if prefixed else ""))
    _print_logs(stack, [f.name for f in followers], lines, prefixed)
    try:
        while not stop:
            for follower in followers:
                for line in follower.lines():
                    typer.echo(line)
            sys.stdout.flush()
            time.sleep(FOLLOW_POLL)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in compose:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def register(app: typer.Typer) -> None:
    @app.command()
    def logs(
        service: str | None = typer.Argument(None, help="One service (default: every service corral up starts)."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until Ctrl-C."),
        lines: int = typer.Option(100, "--lines", "-n", min=0, help="Lines of each log to show first (0: all)."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Show the output of the services `corral up` started (compose services: docker compose logs)."""
        stack = _stack(config)
        names = _select(stack, service)
        prefixed = len(names) > 1
        if follow:
            _follow(stack, names, prefixed, lines)
        elif not _print_logs(stack, names, lines, prefixed):
            raise typer.Exit(1)

    @app.command()
    def restart(
        service: str | None = typer.Argument(None, help="One service (default: all, in dependency order)."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Stop and start services `corral up` starts, then wait until they are healthy again."""
        stack = _stack(config)
        names = _select(stack, service)

        async def run() -> list[Step]:
            async with probe_client() as http:
                return await stack.restart(names, http)

        _report(asyncio.run(run()))

    @app.command()
    def down(config: Path | None = CONFIG_OPTION) -> None:
        """Stop what `corral up` started: the `corral up` holding commands, the commands, compose services."""
        _report(asyncio.run(_stack(config).down()))

    @app.command()
    def clean(
        volumes: bool = typer.Option(False, "--volumes", help="Also remove the compose volumes (their data)."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """`down`, then delete the services' logs and records and remove their containers."""
        stack = _stack(config)
        if not yes:
            typer.echo("corral clean will:")
            for line in stack.clean_plan(volumes):
                typer.echo(f"  - {line}")
            if not typer.confirm("Continue?", default=False):
                typer.echo("nothing done")
                raise typer.Exit(1)
        _report(asyncio.run(stack.clean(volumes)))
