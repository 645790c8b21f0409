"""Chat-ops: fleet commands typed in Slack or Discord, checked against a role allowlist,
run against the supervisor and audited with the chat user as actor.

The platforms' wire formats (signatures, payloads, reply formatting) live in `slack.py`
and `discord.py`; this module sees a neutral `ChatUser` and command text and returns a
neutral `ChatAnswer`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.config.errors import did_you_mean
from corral.config.fleet import CHAT_COMMANDS, ChatOpsConfig
from corral.fleet.supervisor.commands import CommandError

if TYPE_CHECKING:
    from corral.fleet.store import FleetStore
    from corral.fleet.supervisor.audit import AuditLog
    from corral.fleet.supervisor.commands import Dispatcher
    from corral.fleet.supervisor.cost import CostPoller
    from corral.fleet.supervisor.state import FleetState

log = logging.getLogger("corral.fleet.chatops")

USAGE = {
    "status": "status",
    "nodes": "nodes",
    "sessions": "sessions",
    "prompt": "prompt <session> <text>",
    "kill": "kill <session>",
    "cost": "cost [today|week|month]",
}
MAX_ROWS = 20  # a chat reply stays readable; `corral ctl` lists everything


@dataclass(frozen=True, slots=True)
class ChatUser:
    platform: str  # "slack" or "discord"
    user_id: str
    name: str = ""
    roles: tuple[str, ...] = ()  # Discord guild role ids

    @property
    def actor(self) -> str:
        return f"{self.platform}:{self.user_id}" + (f" ({self.name})" if self.name else "")


@dataclass(slots=True)
class ChatAnswer:
    """What a command answers, before a platform formats it. Lines may hold `code` spans."""

    title: str
    lines: list[str] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = True


class ChatOps:
    def __init__(self, config: ChatOpsConfig, *, state: FleetState, store: FleetStore, dispatcher: Dispatcher,
                 cost: CostPoller, audit: AuditLog) -> None:
        self.config = config  # replaced as a whole by a live reload
        self.state, self.store, self.dispatcher, self.cost, self.audit = state, store, dispatcher, cost, audit
        self.refused: Counter[tuple[str, str]] = Counter()  # (platform, reason) -> count

    def roles_of(self, user: ChatUser) -> set[str]:
        if user.platform == "slack":
            return {name for name, role in self.config.roles.items() if user.user_id in role.slack_users}
        return {name for name, role in self.config.roles.items()
                if user.user_id in role.discord_users or set(user.roles) & set(role.discord_roles)}

    def allowed(self, user: ChatUser, command: str) -> bool:
        return bool(self.roles_of(user) & set(self.config.commands.roles_for(command)))

    async def run(self, user: ChatUser, text: str, *, request_id: str) -> ChatAnswer:
        """Run one command line (``prompt s-1 fix the tests``) for ``user``."""
        words = text.strip().split(maxsplit=1)
        command = words[0].lower() if words else "help"
        rest = words[1] if len(words) > 1 else ""
        if command not in CHAT_COMMANDS:
            hint = did_you_mean(command, CHAT_COMMANDS) if command != "help" else ""
            lines = [f"`{USAGE[c]}`" for c in CHAT_COMMANDS]
            title = "Corral commands" if command == "help" else f"Unknown command {command!r}{hint}"
            return ChatAnswer(title=title, lines=lines, ok=command == "help")
        if not self.allowed(user, command):
            self.refused[(user.platform, "not_allowed")] += 1
            await self.audit.record(actor=user.actor, action=f"chatops.{command}", target=rest.split(" ")[0] or None,
                                    args={"text": rest}, result="denied", error="not in an allowed role",
                                    source=user.platform)
            return ChatAnswer(title=f"Not allowed: `{command}` needs one of the roles "
                                    f"{', '.join(self.config.commands.roles_for(command))}", ok=False)
        try:
            answer = await self._execute(command, rest, user, request_id)
        except CommandError as exc:
            answer = ChatAnswer(title=f"`{command}` failed: {exc.message}", ok=False)
        await self.audit.record(actor=user.actor, action=f"chatops.{command}", target=rest.split(" ")[0] or None,
                                args={"text": rest}, result="success" if answer.ok else "failure",
                                error=None if answer.ok else answer.title, source=user.platform)
        return answer

    async def _execute(self, command: str, rest: str, user: ChatUser, request_id: str) -> ChatAnswer:
        if command == "status":
            return self._status()
        if command == "nodes":
            return self._nodes()
        if command == "sessions":
            return self._sessions()
        if command == "cost":
            return await self._cost(rest.strip() or "today")
        parts = rest.split(maxsplit=1)
        if not parts or (command == "prompt" and len(parts) < 2):
            raise CommandError("usage", f"usage: `{USAGE[command]}`")
        args = {"message": parts[1]} if command == "prompt" else {"reason": f"chat-ops by {user.actor}"}
        row = await self.dispatcher.dispatch(
            command, {"session_id": parts[0]}, args, wait_seconds=self.config.reply_within_seconds,
            idempotency_key=f"{user.platform}:{request_id}", actor=user.actor, source=user.platform)
        ok = row["status"] == "success"
        title = f"`{command}` {parts[0]}: {row['status']}" + ("" if ok else f" ({row.get('error')})")
        return ChatAnswer(title=title, fields=[("command", f"`{row['command_id']}`"), ("node", str(row["node_id"]))],
                          ok=ok)

    def _status(self) -> ChatAnswer:
        nodes = Counter(n.status for n in self.state.nodes.values())
        sessions = Counter(s.state for s in self.state.sessions.values())
        cost = sum(s.cost_usd for s in self.state.sessions.values())
        return ChatAnswer(title="Fleet status", fields=[
            ("nodes", f"{nodes['online']} online, {nodes['offline']} offline"),
            ("sessions", ", ".join(f"{n} {state}" for state, n in sorted(sessions.items())) or "none"),
            ("cost of sessions in memory", f"${cost:.4f}"),
        ])

    def _nodes(self) -> ChatAnswer:
        now = time.time()
        per_node = Counter(s.node_id for s in self.state.sessions.values() if s.state != "completed")
        nodes = sorted(self.state.nodes.values(), key=lambda n: n.node_id)
        lines = [f"`{n.node_id}` {n.status}, {per_node[n.node_id]} sessions, projects: "
                 f"{', '.join(n.projects) or '-'}, seen {max(0.0, now - n.last_seen):.0f}s ago"
                 for n in nodes[:MAX_ROWS]]
        return ChatAnswer(title=f"{len(nodes)} nodes", lines=lines + _more(len(nodes)))

    def _sessions(self) -> ChatAnswer:
        live = sorted((s for s in self.state.sessions.values() if s.state != "completed"),
                      key=lambda s: s.last_activity, reverse=True)
        lines = [f"`{s.session_id}` {s.state} on {s.node_id} ({s.project or '-'}), {s.total_tokens} tokens, "
                 f"${s.cost_usd:.4f}" for s in live[:MAX_ROWS]]
        return ChatAnswer(title=f"{len(live)} active sessions", lines=lines + _more(len(live)))

    async def _cost(self, period: str) -> ChatAnswer:
        try:
            report: dict[str, Any] = await self.cost.report(period)
        except ValueError as exc:
            raise CommandError("usage", str(exc)) from None
        by_model = sorted(report["by_model"].items(), key=lambda kv: -kv[1]["cost_usd"])
        lines = [f"`{model}` ${v['cost_usd']:.4f} ({v['tokens']} tokens)" for model, v in by_model[:MAX_ROWS]]
        return ChatAnswer(title=f"Cost ({period}): ${report['total_cost_usd']:.4f}", lines=lines, fields=[
            ("input tokens", str(report["input_tokens"])), ("output tokens", str(report["output_tokens"])),
        ])


def _more(total: int) -> list[str]:
    return [f"... and {total - MAX_ROWS} more (`corral ctl`)"] if total > MAX_ROWS else []
