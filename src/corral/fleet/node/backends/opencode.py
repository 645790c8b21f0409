"""OpenCode through `opencode serve`'s HTTP API: one server per project directory,
started and supervised by the node (restarted if it exits, up to ``max_restarts``).

Sessions: ``POST /session``; a turn: ``POST /session/{id}/message`` (blocks until the
assistant message is complete and carries tokens and cost); ``POST /session/{id}/abort``;
``DELETE /session/{id}``. ``GET /event`` (SSE) is followed to relay compactions and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import httpx

from corral.config.fleet import OpenCodeBackendConfig
from corral.fleet.node.backends.base import BackendError, Emit, TurnResult

log = logging.getLogger("corral.fleet.opencode")
RELAYED = {"session.compacted": "session.compacted", "session.error": "session.error"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """One supervised `opencode serve` for one project directory."""

    def __init__(self, project: str, directory: Path, config: OpenCodeBackendConfig, log: Path) -> None:
        self.project, self.directory, self.config, self.log = project, directory, config, log
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.client: httpx.AsyncClient | None = None
        self.restarts = 0
        self.generation = 0  # bumped on every (re)start
        self.listeners: dict[str, Emit] = {}  # opencode session id -> emit
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = _free_port()
        env = {**os.environ, **self.config.env}
        if self.config.config is not None:
            env["OPENCODE_CONFIG_CONTENT"] = json.dumps(self.config.config)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = await asyncio.create_subprocess_exec(
                *self.config.command, "serve", "--port", str(self.port), "--hostname", "127.0.0.1",
                cwd=self.directory, env=env, stdout=log, stderr=log)
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
        await self._wait_healthy()
        self.generation += 1
        self._tasks = [asyncio.create_task(self._watch(), name=f"opencode-watch-{self.project}"),
                       asyncio.create_task(self._follow_events(), name=f"opencode-events-{self.project}")]

    async def _wait_healthy(self) -> None:
        assert self.client is not None and self.proc is not None
        deadline = asyncio.get_running_loop().time() + self.config.startup_timeout_seconds
        while asyncio.get_running_loop().time() < deadline:
            if self.proc.returncode is not None:
                tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
                raise BackendError(f"opencode serve for {self.project} exited with {self.proc.returncode}: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get(f"{self.base_url}/global/health", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise BackendError(f"opencode serve for {self.project} not healthy in {self.config.startup_timeout_seconds}s")

    async def _watch(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        if self._closing:
            return
        log.warning("opencode serve for %s exited with %s", self.project, self.proc.returncode)
        if self.restarts >= self.config.max_restarts:
            log.error("opencode serve for %s exceeded %d restarts", self.project, self.config.max_restarts)
            return
        self.restarts += 1
        await asyncio.sleep(min(30.0, 0.5 * 2 ** self.restarts))
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self.start()

    async def _follow_events(self) -> None:
        assert self.client is not None
        while not self._closing:
            try:
                async with self.client.stream("GET", f"{self.base_url}/event", params=self._dir(),
                                              timeout=httpx.Timeout(None, connect=5.0)) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            await self._relay(line[5:].strip())
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(1.0)

    async def _relay(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        kind = RELAYED.get(str(event.get("type")))
        props = event.get("properties") or {}
        emit = self.listeners.get(str(props.get("sessionID")))
        if kind and emit is not None:
            await emit(kind, {"source": "opencode", "error": str(props.get("error"))[:300]}
                       if kind == "session.error" else {"source": "opencode"})

    def _dir(self) -> dict[str, str]:
        return {"directory": str(self.directory)}

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.client is not None
        try:
            response = await self.client.request(method, f"{self.base_url}{path}", params=self._dir(), json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"opencode serve for {self.project} unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise BackendError(f"opencode {method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    async def stop(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.client is not None:
            await self.client.aclose()


class OpenCodeBackend:
    kind = "opencode"

    def __init__(self, name: str, config: OpenCodeBackendConfig, directories: dict[str, Path], log_dir: Path) -> None:
        self.name, self.config = name, config
        self.servers = {project: _Server(project, directory, config, log_dir / f"opencode-{project}.log")
                        for project, directory in directories.items()}
        self._generation: dict[str, int] = {}  # ref -> server generation it last talked to

    async def start(self) -> None:
        await asyncio.gather(*(server.start() for server in self.servers.values()))

    def _split(self, ref: str) -> tuple[_Server, str]:
        project, _, session = ref.partition(":")
        return self.servers[project], session

    async def create_session(self, project: str, directory: Path) -> str:
        server = self.servers.get(project)
        if server is None:
            raise BackendError(f"no opencode serve for project {project!r}")
        created = await server.request("POST", "/session", {"title": f"corral {project}"})
        return f"{project}:{created['id']}"

    async def prompt(self, ref: str, text: str, emit: Emit) -> TurnResult:
        server, session = self._split(ref)
        body: dict[str, Any] = {"parts": [{"type": "text", "text": text}]}
        if self.config.model:
            provider_id, _, model_id = self.config.model.partition("/")
            body["model"] = {"providerID": provider_id, "modelID": model_id}
        seen = self._generation.get(ref)
        if seen is not None and seen != server.generation:
            # the server was restarted under this session: a turn cut off by the crash would
            # otherwise hold the session busy, so clear it first
            with contextlib.suppress(BackendError):
                await server.request("POST", f"/session/{session}/abort")
        self._generation[ref] = server.generation
        server.listeners[session] = emit
        try:
            reply = await server.request("POST", f"/session/{session}/message", body)
        finally:
            server.listeners.pop(session, None)
        info = reply.get("info") or {}
        if info.get("error"):
            error = info["error"]
            raise BackendError(f"opencode: {error.get('name')}: {json.dumps(error.get('data'))[:300]}")
        tokens = info.get("tokens") or {}
        cache = tokens.get("cache") or {}
        text_out = "".join(p.get("text", "") for p in reply.get("parts", []) if p.get("type") == "text")
        model = f"{info.get('providerID')}/{info.get('modelID')}" if info.get("modelID") else None
        return TurnResult(text=text_out, model=model, input_tokens=int(tokens.get("input", 0)),
                          output_tokens=int(tokens.get("output", 0)),
                          cached_input_tokens=int(cache.get("read", 0)),
                          cost_usd=float(info["cost"]) if isinstance(info.get("cost"), int | float) else None)

    async def abort(self, ref: str) -> None:
        server, session = self._split(ref)
        with contextlib.suppress(BackendError):
            await server.request("POST", f"/session/{session}/abort")

    async def close_session(self, ref: str) -> None:
        server, session = self._split(ref)
        with contextlib.suppress(BackendError):
            await server.request("DELETE", f"/session/{session}")

    async def aclose(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()), return_exceptions=True)
