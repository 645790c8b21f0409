"""Commands to a node, a project or a session's node, with timeout and idempotency key."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

from prometheus_client import Histogram

from corral.fleet.protocol import COMMAND_TYPES, Envelope
from corral.fleet.store import FleetStore
from corral.fleet.supervisor.audit import AuditLog
from corral.fleet.supervisor.state import FleetState, SessionState


class CommandError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class Sender(Protocol):
    async def send_to(self, node_id: str, envelope: Envelope) -> bool: ...


class Dispatcher:
    def __init__(self, store: FleetStore, state: FleetState, audit: AuditLog, *,
                 default_timeout: float = 30.0, idempotency_ttl: float = 86400.0,
                 durations: Histogram | None = None) -> None:
        self.store, self.state, self.audit = store, state, audit
        self.durations = durations  # corral_fleet_command_duration_seconds{type,status}
        self.default_timeout, self.idempotency_ttl = default_timeout, idempotency_ttl
        self.sender: Sender | None = None
        self.counts: dict[tuple[str, str], int] = {}
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}  # node results
        self._finished: dict[str, asyncio.Future[dict[str, Any]]] = {}  # final rows, for replays

    def resolve_node(self, target: dict[str, Any]) -> str:
        if target.get("session_id"):
            session = self.state.sessions.get(str(target["session_id"]))
            if session is None:
                raise CommandError("unknown_session", f"no session {target['session_id']!r}", 404)
            node_id = session.node_id
        elif target.get("node_id"):
            node_id = str(target["node_id"])
            if node_id not in self.state.nodes:
                raise CommandError("unknown_node", f"no node {node_id!r}", 404)
        elif target.get("project"):
            found = self.state.node_for_project(str(target["project"]))
            if found is None:
                raise CommandError("no_node_for_project", f"no online node serves project {target['project']!r}",
                                   409)
            node_id = found.node_id
        else:
            raise CommandError("invalid_target", "target needs one of node_id, project or session_id")
        if self.state.nodes[node_id].status != "online":
            raise CommandError("node_offline", f"node {node_id!r} is offline", 409)
        return node_id

    async def dispatch(self, kind: str, target: dict[str, Any], args: dict[str, Any], *,
                       wait_seconds: float | None = None, idempotency_key: str | None = None,
                       actor: str = "api", source: str | None = None) -> dict[str, Any]:
        if kind not in COMMAND_TYPES:
            raise CommandError("invalid_command", f"command type must be one of {', '.join(COMMAND_TYPES)}")
        if idempotency_key:
            existing = await self.store.get_command(idempotency_key=idempotency_key)
            if existing is not None:
                return await self._replay(existing)
        if target.get("session_id"):  # a finished session may be in the store only
            await self.state.restore_evicted(self.store, [str(target["session_id"])])
        node_id = self.resolve_node(target)
        if target.get("session_id"):
            args = {**args, "session_id": target["session_id"]}
        if target.get("project"):
            args = {**args, "project": target["project"]}
        command_id = uuid.uuid4().hex
        started = time.perf_counter()
        row = {"command_id": command_id, "idempotency_key": idempotency_key, "type": kind, "node_id": node_id,
               "target": target, "args": args, "status": "pending", "output": None, "error": None,
               "actor": actor, "created_at": time.time(), "finished_at": None}
        loop = asyncio.get_running_loop()
        self._waiting[command_id] = loop.create_future()
        finished = self._finished[command_id] = loop.create_future()
        try:
            if not await self.store.insert_command(row):
                existing = await self.store.get_command(idempotency_key=idempotency_key)
                if existing is not None:
                    return await self._replay(existing)
            result = await self._send_and_wait(node_id, command_id, kind, args,
                                               wait_seconds or self.default_timeout)
        except BaseException:
            self._finished.pop(command_id, None)
            raise
        finally:
            self._waiting.pop(command_id, None)
        self._learn_session(node_id, result)
        await self.store.finish_command(command_id, result["status"], result.get("output"), result.get("error"))
        self.counts[(kind, result["status"])] = self.counts.get((kind, result["status"]), 0) + 1
        if self.durations is not None:
            self.durations.labels(kind, result["status"]).observe(time.perf_counter() - started)
        await self.audit.record(actor=actor, action=f"command.{kind}",
                                target=" ".join(f"{k}={v}" for k, v in sorted(target.items())), args=args,
                                result=result["status"], error=result.get("error"), source=source)
        row.update(status=result["status"], output=result.get("output"), error=result.get("error"),
                   finished_at=time.time())
        finished.set_result(row)
        self._finished.pop(command_id, None)
        return row

    async def _replay(self, existing: dict[str, Any]) -> dict[str, Any]:
        finished = self._finished.get(existing["command_id"])
        if finished is not None and existing["status"] == "pending":
            existing = await asyncio.shield(finished)
        return {**existing, "replayed": True}

    async def _send_and_wait(self, node_id: str, command_id: str, kind: str, args: dict[str, Any],
                             wait_seconds: float) -> dict[str, Any]:
        envelope = Envelope(type="command", id=command_id,
                            payload={"command_id": command_id, "type": kind, "args": args, "timeout": wait_seconds})
        if self.sender is None or not await self.sender.send_to(node_id, envelope):
            return {"status": "failure", "error": f"node {node_id!r} is not connected"}
        try:
            return await asyncio.wait_for(asyncio.shield(self._waiting[command_id]), wait_seconds)
        except TimeoutError:
            return {"status": "timeout", "error": f"no result within {wait_seconds:g}s"}

    def _learn_session(self, node_id: str, result: dict[str, Any]) -> None:
        """A started session is addressable at once, before its first event is stored."""
        output = result.get("output") or {}
        sid = output.get("session_id")
        if result.get("status") == "success" and isinstance(sid, str) and sid not in self.state.sessions:
            self.state.sessions[sid] = SessionState(session_id=sid, node_id=node_id, state=output.get("state", "idle"))

    def resolve(self, payload: dict[str, Any]) -> bool:
        """A command_result arrived; False when nobody waits for it (late or unknown)."""
        future = self._waiting.get(str(payload.get("command_id")))
        if future is None or future.done():
            return False
        future.set_result({"status": payload.get("status", "failure"), "output": payload.get("output") or {},
                           "error": payload.get("error")})
        return True
