"""Sessions on this node and the commands that act on them.

A turn runs as a task: ``session.running`` -> backend -> ``session.message`` + ``usage`` ->
``session.idle`` (or ``session.error``). Every event goes through ``emit`` into the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.config.fleet import ProjectConfig
from corral.fleet.node.backends.base import Backend

log = logging.getLogger("corral.fleet.node")
EventSink = Callable[[dict[str, Any]], Awaitable[None]]


class CommandFailed(Exception):
    pass


@dataclass
class NodeSession:
    session_id: str
    project: str
    backend: str
    ref: str
    state: str = "idle"
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    last_prompt: str | None = None
    last_reply: str | None = None
    created_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None

    def persisted(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "project": self.project, "backend": self.backend, "ref": self.ref,
                "state": self.state, "model": self.model, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "last_prompt": self.last_prompt,
                "last_reply": self.last_reply, "created_at": self.created_at}

    def snapshot(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "project": self.project, "backend": self.backend,
                "state": self.state, "model": self.model, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "last_reply": self.last_reply}


class SessionStore(Protocol):
    async def save_session(self, session_id: str, body: dict[str, Any]) -> None: ...

    async def load_sessions(self) -> list[dict[str, Any]]: ...


class SessionManager:
    def __init__(self, projects: list[ProjectConfig], backends: dict[str, Backend], sink: EventSink,
                 store: SessionStore | None = None) -> None:
        self.projects = {p.name: p for p in projects}
        self.backends = backends
        self.sink = sink
        self.store = store
        self.sessions: dict[str, NodeSession] = {}

    async def restore(self) -> None:
        """Sessions from before a node restart; a turn that was cut off is reported as an error."""
        if self.store is None:
            return
        for body in await self.store.load_sessions():
            if body.get("backend") not in self.backends:
                continue
            session = NodeSession(**body)
            self.sessions[session.session_id] = session
            if session.state == "running":
                session.state = "error"
                await self.emit(session, "session.error", {"error": "node restarted during a turn"})

    async def emit(self, s: NodeSession, kind: str, data: dict[str, Any] | None = None) -> None:
        if self.store is not None:
            await self.store.save_session(s.session_id, s.persisted())
        await self.sink({"type": kind, "session_id": s.session_id, "project": s.project,
                         "data": {"backend": s.backend, **(data or {})}})

    def snapshots(self) -> list[dict[str, Any]]:
        return [s.snapshot() for s in self.sessions.values() if s.state != "completed"]

    def _session(self, args: dict[str, Any]) -> NodeSession:
        session = self.sessions.get(str(args.get("session_id")))
        if session is None:
            raise CommandFailed(f"no session {args.get('session_id')!r} on this node")
        return session

    async def handle(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        handlers = {"start": self.start, "prompt": self.prompt, "resume": self.resume,
                    "restart": self.restart, "kill": self.kill, "status": self.status}
        if kind not in handlers:
            raise CommandFailed(f"unknown command {kind!r}")
        return await handlers[kind](args)

    async def start(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("project")
        project = self.projects.get(str(name))
        if project is None:
            raise CommandFailed(f"project {name!r} is not configured on this node")
        backend = self.backends[project.backend]
        ref = await backend.create_session(project.name, Path(project.directory))
        session = NodeSession(session_id=f"{project.name}-{uuid.uuid4().hex[:12]}", project=project.name,
                              backend=project.backend, ref=ref)
        self.sessions[session.session_id] = session
        await self.emit(session, "session.started", {"ref": ref})
        prompts = [str(p) for p in args.get("prompts") or []] or ([str(args["prompt"])] if args.get("prompt") else [])
        if prompts:
            await self._turn(session, prompts, wait=bool(args.get("wait")))
        return {"session_id": session.session_id, **self._reply(session, args)}

    async def prompt(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._session(args)
        text = args.get("message") or args.get("prompt")
        if not text:
            raise CommandFailed("prompt needs a `message`")
        await self._turn(session, [str(text)], wait=bool(args.get("wait")))
        return {"session_id": session.session_id, **self._reply(session, args)}

    async def resume(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.prompt({**args, "message": args.get("message") or "continue"})

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        old = self._session(args)
        await self._stop(old, "session.completed", {"reason": "restarted"})
        prompt = args.get("message") or old.last_prompt
        started = await self.start({"project": old.project, "prompt": prompt, "wait": args.get("wait")})
        return {**started, "replaced": old.session_id}

    async def kill(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self._session(args)
        await self._stop(session, "session.killed", {"reason": args.get("reason") or "killed"})
        return {"session_id": session.session_id, "state": session.state}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("session_id"):
            return self._session(args).snapshot()
        return {"sessions": [s.snapshot() for s in self.sessions.values()]}

    def _reply(self, session: NodeSession, args: dict[str, Any]) -> dict[str, Any]:
        return {"reply": session.last_reply, "state": session.state} if args.get("wait") else {"state": session.state}

    async def _stop(self, session: NodeSession, kind: str, data: dict[str, Any]) -> None:
        backend = self.backends[session.backend]
        if session.task is not None and not session.task.done():
            await backend.abort(session.ref)
            session.task.cancel()
            await asyncio.gather(session.task, return_exceptions=True)
        await backend.close_session(session.ref)
        session.state = "completed"
        await self.emit(session, kind, data)

    async def _turn(self, session: NodeSession, prompts: list[str], *, wait: bool) -> None:
        """Runs the prompts one turn after another in the background (or waits, with ``wait``)."""
        if session.task is not None and not session.task.done():
            raise CommandFailed(f"session {session.session_id} is busy with a turn")
        if session.state == "completed":
            raise CommandFailed(f"session {session.session_id} has ended")
        session.task = asyncio.create_task(self._run_turns(session, prompts), name=f"turn-{session.session_id}")
        if wait:
            await asyncio.shield(session.task)

    async def _run_turns(self, session: NodeSession, prompts: list[str]) -> None:
        for text in prompts:
            if not await self._run_turn(session, text):
                return

    async def _run_turn(self, session: NodeSession, text: str) -> bool:
        backend = self.backends[session.backend]
        session.last_prompt, session.state = text, "running"
        await self.emit(session, "session.running", {"prompt_chars": len(text)})

        async def relay(kind: str, data: dict[str, Any]) -> None:
            await self.emit(session, kind, data)

        try:
            result = await backend.prompt(session.ref, text, relay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any backend failure becomes a session error, never a node crash
            log.warning("turn in %s failed: %s", session.session_id, exc)
            session.state = "error"
            await self.emit(session, "session.error", {"error": str(exc)[:500]})
            return False
        session.model = result.model or session.model
        session.input_tokens += result.input_tokens
        session.output_tokens += result.output_tokens
        session.last_reply = result.text
        await self.emit(session, "session.message", {"role": "assistant", "text": result.text[:4000]})
        usage: dict[str, Any] = {"model": result.model, "input_tokens": result.input_tokens,
                                 "output_tokens": result.output_tokens,
                                 "cached_input_tokens": result.cached_input_tokens}
        if result.cost_usd is not None:
            usage["cost_usd"] = result.cost_usd
        await self.emit(session, "usage", usage)
        session.state = "idle"
        await self.emit(session, "session.idle", {})
        return True

    async def aclose(self) -> None:
        for session in self.sessions.values():
            if session.task is not None and not session.task.done():
                session.task.cancel()
        await asyncio.gather(*(s.task for s in self.sessions.values() if s.task), return_exceptions=True)
