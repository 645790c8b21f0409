"""The stack after `corral up`: stop it (`down`), restart services, remove what it left
(`clean`), and find each service's log.

Local commands are found through their process records (`corral.boot.processes`); a
`corral up` still holding them is asked to stop first, so it stops them itself, in
reverse dependency order, and exits. Compose services go through ``docker compose``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from corral.boot.containers import (
    compose_base,
    compose_missing,
    engine_unreachable,
    group_by_project,
    is_container,
    run,
)
from corral.boot.launch import Launcher
from corral.boot.manager import BootManager
from corral.boot.processes import ProcessTable, pid_alive, signal_owner, stop_process
from corral.boot.specs import ServiceSpec, topological_levels


class StackError(ValueError):
    """A service name the stack does not know, or nothing to act on."""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str


def is_local(spec: ServiceSpec) -> bool:
    return spec.start is not None and bool(spec.start.command) and not spec.remote


class Stack:
    def __init__(self, specs: list[ServiceSpec], *, run_dir: Path, log_dir: Path, docker: str = "docker",
                 grace: float = 10.0, compose_timeout: float = 120.0) -> None:
        self.specs = specs
        self.table = ProcessTable(run_dir)
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.docker = docker
        self.grace = grace
        self.compose_timeout = compose_timeout

    # ---- what there is -------------------------------------------------------------

    def names(self) -> list[str]:
        """Services with something to act on: startable ones, and any recorded process."""
        names = [s.name for s in self.specs if is_local(s) or is_container(s)]
        return names + [r.name for r in self.table.all() if r.name not in names]

    def select(self, name: str | None) -> list[str]:
        known = self.names()
        if name is None:
            return known
        if name not in known:
            listed = ", ".join(known) or "none"
            raise StackError(f"no service {name!r} that corral up starts (services it starts: {listed})")
        return [name]

    def spec(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    def log_path(self, name: str) -> Path:
        record = self.table.get(name)
        return Path(record.log_path) if record else self.log_dir / f"{name}.log"

    def process_state(self, name: str) -> str | None:
        """``pid N running`` / ``exited`` for a recorded local process, None if none recorded."""
        record = self.table.get(name)
        if record is None:
            return None
        return f"pid {record.pid} running" if self.table.alive(record) else f"pid {record.pid} exited"

    # ---- down ----------------------------------------------------------------------

    async def down(self) -> list[Step]:
        steps: list[Step] = []
        records = self.table.all()
        for owner in sorted({r.owner for r in records if r.owner is not None and pid_alive(r.owner)}):
            held = [r for r in records if r.owner == owner]
            stopped = signal_owner(held[0], self.grace + 5.0)
            steps.append(Step(f"corral up (pid {owner})", stopped,
                              "stopped, with the services it held" if stopped else "did not exit; stopping "
                              "its services directly"))
        for record in reversed(self.table.all()):
            detail = stop_process(record, self.grace) if self.table.alive(record) else "not running"
            self.table.forget(record.name, record.pid)
            steps.append(Step(record.name, True, detail))
        steps += await self._compose_each("stop", [s for s in self.specs if is_container(s)], "stopped")
        return steps

    # ---- restart -------------------------------------------------------------------

    async def restart(self, names: list[str], http: httpx.AsyncClient) -> list[Step]:
        targets = [s for level in topological_levels(self.specs) for s in level if s.name in names]
        steps: list[Step] = []
        for spec in reversed(targets):
            record = self.table.get(spec.name)
            if is_local(spec) and record is not None:
                if self.table.alive(record):
                    stop_process(record, self.grace)
                self.table.forget(spec.name, record.pid)
        failed = await self._compose_each("restart", [s for s in targets if is_container(s)], "restarted")
        steps += [s for s in failed if not s.ok]
        broken = {s.name for s in steps}
        # Dependencies not restarted are already up: boot only the targets, in order.
        chosen = [replace(s, depends_on=tuple(d for d in s.depends_on if d in names)) for s in targets
                  if s.name not in broken]
        launcher = Launcher(log_dir=self.log_dir, run_dir=self.run_dir, docker=self.docker, detach=True)
        report = await BootManager(chosen, http=http, launcher=launcher).run()
        launcher.release()
        for outcome in report.outcomes:
            pid = self.table.get(outcome.spec.name)
            where = f" (pid {pid.pid})" if pid and is_local(outcome.spec) else ""
            steps.append(Step(outcome.spec.name, outcome.ok, f"{outcome.outcome.value}{where}: {outcome.detail}"))
        return steps

    # ---- clean ---------------------------------------------------------------------

    def clean_plan(self, volumes: bool) -> list[str]:
        """What `clean` removes, one line each, for the confirmation."""
        lines = [f"stop every service corral up started ({', '.join(self.names()) or 'none'})"]
        logs = [self.log_path(n) for n in self.names() if self.log_path(n).exists()]
        if logs:
            lines.append("delete the logs " + ", ".join(str(p) for p in logs))
        for start, members in group_by_project(self.specs):
            project = start.compose_file or "the compose file in " + (start.cwd or "the current directory")
            services = ", ".join(str(m.start.compose_service) for m in members if m.start)
            if volumes:
                lines.append(f"docker compose down --volumes for {project}: every container and named volume "
                             "of that project, with their data")
            else:
                lines.append(f"remove the containers of {services} ({project}); volumes are kept")
        return lines

    async def clean(self, volumes: bool) -> list[Step]:
        steps = await self.down()
        for name in self.names():
            path = self.log_path(name)
            if path.exists():
                path.unlink()
                steps.append(Step(name, True, f"deleted {path}"))
            self.table.forget(name)
        containers = [s for s in self.specs if is_container(s)]
        if volumes:
            steps += await self._compose_project(["down", "--volumes"], containers, "removed with its volumes")
        else:
            steps += await self._compose_each("rm", containers, "container removed", "--stop", "--force")
        return steps

    # ---- docker compose ------------------------------------------------------------

    async def _compose_each(self, verb: str, specs: list[ServiceSpec], done: str, *flags: str) -> list[Step]:
        steps: list[Step] = []
        for start, members in group_by_project(specs):
            services = [str(m.start.compose_service) for m in members if m.start]
            argv = [*compose_base(start, self._docker()), verb, *flags, *services]
            ok, detail = await self._compose(argv, start.cwd)
            steps += [Step(m.name, ok, done if ok else detail) for m in members]
        return steps

    async def _compose_project(self, args: list[str], specs: list[ServiceSpec], done: str) -> list[Step]:
        steps: list[Step] = []
        for start, members in group_by_project(specs):
            ok, detail = await self._compose([*compose_base(start, self._docker()), *args], start.cwd)
            steps += [Step(m.name, ok, done if ok else detail) for m in members]
        return steps

    def _docker(self) -> str:
        return shutil.which(self.docker) or self.docker

    async def _compose(self, argv: list[str], cwd: str | None) -> tuple[bool, str]:
        if shutil.which(argv[0]) is None:
            return False, f"{self.docker} is not installed"
        code, out, err = await run(argv, cwd=cwd, seconds=self.compose_timeout)
        text = (err or out).strip()
        if code == 0:
            return True, ""
        if code is None:
            return False, f"docker compose did not finish within {self.compose_timeout:g}s"
        if engine_unreachable(text):
            return False, f"docker engine unreachable: {text.splitlines()[0][:300]}"
        if compose_missing(text):
            return False, "docker compose is not available (install the docker compose plugin)"
        return False, f"docker compose failed (exit {code}): {text.splitlines()[-1][:300] if text else ''}"
