"""Starting services locally: a command (kept as a child process) or a docker compose
service (`docker compose up -d <service>`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from corral.boot.processes import ProcessRecord, ProcessTable, start_ticks
from corral.boot.specs import ServiceSpec


class LaunchError(RuntimeError):
    """A service could not be started; the message says why and what to do."""


@dataclass
class Launched:
    name: str
    how: str  # "command" or "compose"
    process: subprocess.Popen[bytes] | None
    log_path: Path | None


class Launcher:
    """Starts services and stops the commands it started (in reverse order).

    Commands run in their own session so a Ctrl-C in the terminal reaches Corral
    only, which then stops them in order. With ``detach`` they are left running
    and their pids are written to ``<run_dir>/<name>.pid``. Either way each gets a
    record in ``run_dir`` (`corral.boot.processes`) naming this process as its holder
    unless detached, which is how `corral logs/restart/down` find it.
    """

    def __init__(self, *, log_dir: Path, run_dir: Path | None = None, docker: str = "docker",
                 detach: bool = False) -> None:
        self.log_dir = log_dir
        self.run_dir = run_dir or log_dir
        self.docker = docker
        self.detach = detach
        self.launched: list[Launched] = []
        self.table = ProcessTable(self.run_dir)

    async def start(self, spec: ServiceSpec) -> Launched:
        if spec.start is None:
            raise LaunchError(f"{spec.name}: no start command configured")
        if spec.start.command:
            launched = self._start_command(spec)
        else:
            launched = await self._start_compose(spec)
        self.launched.append(launched)
        return launched

    def _start_command(self, spec: ServiceSpec) -> Launched:
        assert spec.start is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        env = {**os.environ, **spec.start.env}
        with log_path.open("ab") as log:
            try:
                process = subprocess.Popen(
                    list(spec.start.command), cwd=spec.start.cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                raise LaunchError(
                    f"{spec.name}: cannot run {spec.start.command[0]!r}: {exc.strerror or exc}"
                ) from exc
        self.table.write(ProcessRecord(
            name=spec.name, pid=process.pid, argv=list(spec.start.command), log_path=str(log_path),
            cwd=spec.start.cwd, owner=None if self.detach else os.getpid(), started_at=time.time(),
            start_ticks=start_ticks(process.pid)))
        if self.detach:
            (self.run_dir / f"{spec.name}.pid").write_text(f"{process.pid}\n")
        return Launched(spec.name, "command", process, log_path)

    async def _start_compose(self, spec: ServiceSpec) -> Launched:
        assert spec.start is not None and spec.start.compose_service
        docker = shutil.which(self.docker)
        if docker is None:
            raise LaunchError(
                f"{spec.name}: docker is not installed; start {spec.start.compose_service} yourself "
                f"or set {_remote_hint(spec)}"
            )
        argv = [docker, "compose"]
        if spec.start.compose_file:
            argv += ["-f", spec.start.compose_file]
        if spec.start.compose_profile:
            argv += ["--profile", spec.start.compose_profile]
        argv += ["up", "-d", spec.start.compose_service]
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=spec.start.cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=spec.deadline)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise LaunchError(f"{spec.name}: docker compose up did not finish within {spec.deadline:g}s") from None
        if process.returncode != 0:
            tail = _last_lines(output.decode(errors="replace"), 3)
            raise LaunchError(f"{spec.name}: docker compose up failed (exit {process.returncode}): {tail}")
        return Launched(spec.name, "compose", None, None)

    def exited(self, name: str) -> str | None:
        """Why a command we started has already exited, or None while it runs."""
        for launched in self.launched:
            if launched.name == name and launched.process is not None:
                code = launched.process.poll()
                if code is None:
                    return None
                tail = _last_lines(launched.log_path.read_text(errors="replace"), 3) if launched.log_path else ""
                return f"exited with code {code}" + (f"; last output: {tail}" if tail else "")
        return None

    async def stop_all(self, grace: float = 10.0) -> None:
        """Stop the commands we started, last started first (compose services are left up)."""
        if self.detach:
            self.release()
            return
        for launched in reversed(self.launched):
            if launched.process is not None:
                await _terminate(launched.process, grace)
                self.table.forget(launched.name, launched.process.pid)
        self.launched.clear()

    def release(self) -> None:
        """Hand detached commands over to the system: we will not wait for them. Popen
        warns when it is dropped while its child runs; marking it finished says that
        leaving it running is intended (the pid file is how to find it again)."""
        for launched in self.launched:
            if launched.process is not None and launched.process.poll() is None:
                launched.process.returncode = 0
        self.launched.clear()


def _remote_hint(spec: ServiceSpec) -> str:
    from corral.boot.specs import env_prefix

    return f"{env_prefix(spec.name)}REMOTE=true if it runs elsewhere"


async def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)


def _last_lines(text: str, count: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[:400]
