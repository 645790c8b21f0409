"""Services that are docker compose services: their container state, and the compose
commands `corral logs/restart/down/clean` run for them.

The state comes from ``docker compose ps --all --format json``; without a docker CLI, or
with a CLI whose engine does not answer, the state says so instead of guessing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from corral.boot.specs import ServiceSpec, StartSpec

# What the docker CLI prints when it cannot reach the engine (socket missing, daemon
# stopped, no permission on the socket, a DOCKER_HOST that does not answer).
_UNREACHABLE = ("cannot connect to the docker daemon", "error during connect", "is the docker daemon running",
                "permission denied while trying to connect", "docker.sock: connect")


@dataclass(frozen=True, slots=True)
class ContainerState:
    state: str  # running, exited, restarting, paused, created, dead; or missing, unreachable, unavailable, error
    detail: str
    health: str | None = None  # healthy, unhealthy, starting (when the image has a healthcheck)

    @property
    def summary(self) -> str:
        health = f" ({self.health})" if self.health else ""
        return f"container {self.state}{health}"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "health": self.health, "detail": self.detail}


def is_container(spec: ServiceSpec) -> bool:
    return spec.start is not None and bool(spec.start.compose_service) and not spec.remote


def compose_base(start: StartSpec, docker: str) -> list[str]:
    argv = [docker, "compose"]
    if start.compose_file:
        argv += ["-f", start.compose_file]
    if start.compose_profile:
        argv += ["--profile", start.compose_profile]
    return argv


def group_by_project(specs: Iterable[ServiceSpec]) -> list[tuple[StartSpec, list[ServiceSpec]]]:
    """Compose services grouped by the compose invocation that reaches them."""
    groups: dict[tuple[str | None, str | None, str | None], tuple[StartSpec, list[ServiceSpec]]] = {}
    for spec in specs:
        if not is_container(spec):
            continue
        assert spec.start is not None
        key = (spec.start.compose_file, spec.start.compose_profile, spec.start.cwd)
        groups.setdefault(key, (spec.start, []))[1].append(spec)
    return list(groups.values())


def compose_missing(output: str) -> bool:
    """A docker CLI without the compose plugin."""
    return "unknown command" in output.lower() and "compose" in output.lower()


def engine_unreachable(output: str) -> bool:
    lowered = output.lower()
    return any(marker in lowered for marker in _UNREACHABLE)


async def container_states(specs: list[ServiceSpec], *, docker: str = "docker",
                           seconds: float = 10.0) -> dict[str, ContainerState]:
    """The container state of every compose service among ``specs``, by service name."""
    containers = [s for s in specs if is_container(s)]
    if not containers:
        return {}
    found = shutil.which(docker)
    if found is None:
        return {s.name: ContainerState("unavailable", f"{docker} is not installed") for s in containers}
    states: dict[str, ContainerState] = {}
    for start, members in group_by_project(containers):
        states.update(await _project_states(found, start, members, seconds))
    return states


async def _project_states(docker: str, start: StartSpec, members: list[ServiceSpec],
                          seconds: float) -> dict[str, ContainerState]:
    services = [m.start.compose_service for m in members if m.start and m.start.compose_service]
    argv = [*compose_base(start, docker), "ps", "--all", "--format", "json", *services]
    code, output, errors = await run(argv, cwd=start.cwd, seconds=seconds)
    if code != 0 or code is None:
        text = (errors or output).strip()
        if code is None:
            state = ContainerState("error", f"docker compose ps did not answer within {seconds:g}s")
        elif engine_unreachable(text):
            state = ContainerState("unreachable", f"docker engine unreachable: {_first_line(text)}")
        elif compose_missing(text):
            state = ContainerState("unavailable", "docker compose is not available (install the compose plugin)")
        else:
            state = ContainerState("error", f"docker compose ps failed (exit {code}): {_first_line(text)}")
        return {m.name: state for m in members}
    try:
        rows = _rows(output)
    except ValueError:
        return {m.name: ContainerState("error", f"unreadable docker compose ps output: {_first_line(output)}")
                for m in members}
    by_service = {str(row.get("Service")): row for row in rows}
    states = {}
    for member in members:
        assert member.start is not None
        row = by_service.get(str(member.start.compose_service))
        if row is None:
            states[member.name] = ContainerState("missing", "no container (never started, or removed)")
            continue
        health = str(row.get("Health") or "") or None
        states[member.name] = ContainerState(str(row.get("State") or "unknown"), str(row.get("Status") or ""),
                                             health)
    return states


def _rows(output: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json`: one JSON object a line (compose >= 2.21) or one
    JSON array (older releases)."""
    text = output.strip()
    if not text:
        return []
    if text.startswith("["):
        parsed = json.loads(text)
        return [row for row in parsed if isinstance(row, dict)]
    rows = []
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else "no output"


async def run(argv: list[str], *, cwd: str | None, seconds: float) -> tuple[int | None, str, str]:
    """(exit code or None on timeout, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE,
                                                   stdin=asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None, "", ""
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
