"""Policies that act on sessions: resume_on_idle, restart_on_compaction, kill_on_cost.

Each (session, policy) has a retry counter: every automatic action adds one, failed or
successful (a session that keeps going idle is resumed at most max_retries times, not
forever); at max_retries the policy stops acting on that session and alerts, until
retry_reset_seconds have passed since the last attempt. A successful action also starts a
cool-down of one idle threshold, so a session is not prompted on every tick. Every action is
audited and stored as a ``policy.action`` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from corral.config.fleet import PoliciesConfig, RetryPolicyConfig
from corral.fleet.store import EventRow
from corral.fleet.supervisor.audit import AuditLog
from corral.fleet.supervisor.commands import CommandError, Dispatcher
from corral.fleet.supervisor.events import EventPipeline
from corral.fleet.supervisor.state import FleetState, SessionState

log = logging.getLogger("corral.fleet.policies")


@dataclass
class _Retry:
    count: int = 0
    last_attempt: float = 0.0
    blocked: bool = False
    cooldown_until: float = 0.0


class PolicyEngine:
    def __init__(self, config: PoliciesConfig, state: FleetState, dispatcher: Dispatcher,
                 pipeline: EventPipeline, audit: AuditLog) -> None:
        self.config, self.state, self.dispatcher = config, state, dispatcher
        self.pipeline, self.audit = pipeline, audit
        self.retries: dict[tuple[str, str], _Retry] = {}
        self.actions: dict[tuple[str, str], int] = {}
        self._compacted: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[tuple[str, str]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fleet-policies")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def on_events(self, rows: list[EventRow]) -> None:
        """Compaction events trigger restart_on_compaction on the next check."""
        for row in rows:
            if row.type == "session.compacted" and row.session_id:
                self._compacted.add(row.session_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_seconds)
            try:
                await self.check(time.time())
            except Exception:  # one bad tick must not stop the policies
                log.exception("policy check failed")

    async def check(self, now: float) -> None:
        for session in list(self.state.sessions.values()):
            node = self.state.nodes.get(session.node_id)
            if node is None or node.status != "online" or session.state in ("completed", "unreachable"):
                continue
            if await self._maybe_kill(session, now) or await self._maybe_restart(session, now):
                continue
            await self._maybe_resume(session, now)

    async def _maybe_kill(self, s: SessionState, now: float) -> bool:
        p = self.config.kill_on_cost
        if not p.enabled or s.cost_usd < p.cost_threshold_usd:
            return False
        return await self._act("kill_on_cost", p, s, "kill", {"reason": f"cost {s.cost_usd:.4f} USD"}, now)

    async def _maybe_restart(self, s: SessionState, now: float) -> bool:
        p = self.config.restart_on_compaction
        if not p.enabled:
            return False
        by_event = p.on_compaction_event and s.session_id in self._compacted
        if not (by_event or s.total_tokens >= p.token_threshold):
            return False
        self._compacted.discard(s.session_id)
        reason = "compaction event" if by_event else f"{s.total_tokens} tokens"
        return await self._act("restart_on_compaction", p, s, "restart", {"reason": reason}, now)

    async def _maybe_resume(self, s: SessionState, now: float) -> bool:
        p = self.config.resume_on_idle
        if not p.enabled or s.state != "idle" or now - s.last_activity < p.idle_threshold_seconds:
            return False
        return await self._act("resume_on_idle", p, s, "resume", {"message": p.message}, now)

    async def _act(self, name: str, policy: RetryPolicyConfig, s: SessionState, command: str,
                   args: dict[str, str], now: float) -> bool:
        key = (s.session_id, name)
        if key in self._inflight:
            return True
        retry = self.retries.setdefault(key, _Retry())
        if retry.blocked or retry.count >= policy.max_retries:
            if now - retry.last_attempt < policy.retry_reset_seconds:
                return False
            retry.count, retry.blocked = 0, False
        if now < retry.cooldown_until:
            return False
        self._inflight.add(key)
        try:
            status, error = await self._dispatch(command, s, args)
        finally:
            self._inflight.discard(key)
        retry.last_attempt = now
        retry.count += 1
        if status == "success":
            retry.cooldown_until = now + getattr(policy, "idle_threshold_seconds", 0.0)
        self.actions[(name, status)] = self.actions.get((name, status), 0) + 1
        data = {"policy": name, "action": command, "result": status, "retry_count": retry.count,
                "last_error": error, **args}
        self.pipeline.emit("policy.action", data, session_id=s.session_id, project=s.project)
        await self.audit.record(actor="policy-engine", action=f"policy.{name}", target=s.session_id,
                                args=args, result=status, error=error)
        if retry.count >= policy.max_retries:
            retry.blocked = True
            self.pipeline.emit("policy.retry_cap", {**data, "reason": "max_retries_reached"},
                               session_id=s.session_id, project=s.project)
        return True

    async def _dispatch(self, command: str, s: SessionState, args: dict[str, str]) -> tuple[str, str | None]:
        try:
            row = await self.dispatcher.dispatch(
                command, {"session_id": s.session_id}, dict(args),
                wait_seconds=self.config.command_timeout_seconds, actor="policy-engine")
        except CommandError as exc:
            return "failure", exc.message
        return str(row["status"]), row.get("error")
