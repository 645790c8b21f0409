"""The fleet's console (`corral supervisor` at ``/ui/``): nodes, sessions by state, live
events, commands with a confirmation step, cost per node and session, and the audit
log. Built from the supervisor's own state, store, dispatcher and cost parts; sign-in
takes the fleet token (every signed-in operator is an admin of the fleet)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from corral.console.web import (
    HEARTBEAT,
    ConsoleSession,
    Identity,
    NavItem,
    SessionSigner,
    Site,
    csrf_checked,
    form_text,
    html_events,
    money,
    page_route,
    process_secret,
)
from corral.fleet.protocol import SESSION_STATES
from corral.fleet.store import tables as fleet_tables
from corral.fleet.supervisor.commands import CommandError
from corral.fleet.supervisor.cost import PERIODS

if TYPE_CHECKING:
    from corral.fleet.supervisor.app import Supervisor

# What an operator may send from the page (``start`` and ``status`` stay with the API and CLI).
COMMANDS = {"prompt": "Send a prompt", "resume": "Resume", "restart": "Restart", "kill": "Kill"}


def ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    seconds = max(0.0, now - ts)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "—"


class FleetConsole:
    def __init__(self, sup: Supervisor, *, secret: bytes | None = None, live_seconds: float = 1.0) -> None:
        self.sup = sup
        self.live_seconds = live_seconds
        self.site = Site(
            title="Corral fleet", signer=SessionSigner(secret or process_secret()), sign_in=self.sign_in,
            still_valid=lambda identity: identity.kind == "fleet", secret_label="Fleet token",
            nav=[NavItem("/ui/", "Nodes"), NavItem("/ui/sessions", "Sessions"), NavItem("/ui/events", "Events"),
                 NavItem("/ui/commands", "Commands"), NavItem("/ui/cost", "Cost"), NavItem("/ui/audit", "Audit")])
        self.site.templates.globals.update(ago=ago, clock=clock, money=money)

    async def sign_in(self, secret: str) -> Identity | None:
        return Identity("fleet", "fleet operator", admin=True) if self.sup.tokens.valid(secret) else None

    def routes(self) -> list[BaseRoute]:
        page, site = self.site.page, self.site
        return [
            *site.routes(),
            page_route("/ui/", page(self.nodes)),
            page_route("/ui/sessions", page(self.sessions)),
            page_route("/ui/events", page(self.events)),
            page_route("/ui/live/events", page(self.events_live)),
            page_route("/ui/commands", page(self.commands)),
            page_route("/ui/commands/confirm", page(csrf_checked(site, self.confirm)), "POST"),
            page_route("/ui/commands", page(csrf_checked(site, self.send)), "POST"),
            page_route("/ui/cost", page(self.cost)),
            page_route("/ui/audit", page(self.audit)),
        ]

    async def nodes(self, request: Request, session: ConsoleSession) -> Response:
        state = self.sup.state
        nodes = sorted((n.row() for n in state.nodes.values()), key=lambda n: (n["status"] != "online", n["node_id"]))
        by_state = Counter(s.state for s in state.sessions.values())
        return self.site.render(request, session, "fleet/nodes.html", title="Nodes", nodes=nodes, now=time.time(),
                                by_state=[(s, by_state.get(s, 0)) for s in SESSION_STATES])

    async def sessions(self, request: Request, session: ConsoleSession) -> Response:
        from corral.fleet.supervisor.http import list_sessions

        wanted = request.query_params.get("state") or None
        wanted = wanted if wanted in SESSION_STATES else None
        rows, total = await list_sessions(self.sup, {"node_id": request.query_params.get("node_id") or None,
                                                     "project": None, "state": wanted}, 500)
        return self.site.render(request, session, "fleet/sessions.html", title="Sessions", rows=rows, total=total,
                                state=wanted, states=SESSION_STATES, now=time.time())

    async def events(self, request: Request, session: ConsoleSession) -> Response:
        rows = await self._latest_events(100)
        last = rows[-1]["id"] if rows else 0
        return self.site.render(request, session, "fleet/events.html", title="Events", rows=rows, last=last)

    async def _latest_events(self, count: int) -> list[dict[str, Any]]:
        """The newest ``count`` events, oldest first (the store pages forward from an id)."""
        async with self.sup.store.engine.connect() as conn:
            last = (await conn.execute(select(func.max(fleet_tables.events.c.id)))).scalar()
        if not last:
            return []
        return await self.sup.store.list_events(after_id=max(0, int(last) - count), limit=count)

    async def events_live(self, request: Request, session: ConsoleSession) -> Response:
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            after = 0

        async def fragments() -> AsyncIterator[str]:
            nonlocal after
            quiet = 0
            # Until the supervisor stops (its HTTP server waits for open responses to end).
            while self.sup.hub.listening:
                rows = await self.sup.store.list_events(after_id=after, limit=200)
                if rows:
                    after, quiet = int(rows[-1]["id"]), 0
                    yield self.site.fragment("fleet/_events.html", rows=rows)
                elif (quiet := quiet + 1) * self.live_seconds >= 15:
                    quiet = 0
                    yield HEARTBEAT
                await asyncio.sleep(self.live_seconds)

        return html_events(fragments())

    async def commands(self, request: Request, session: ConsoleSession, *, result: dict[str, Any] | None = None,
                       error: str | None = None, status: int = 200) -> Response:
        sessions = sorted((s.row() for s in self.sup.state.sessions.values()), key=lambda s: -s["last_activity"])
        recent = await self.sup.store.list_commands(50)
        return self.site.render(request, session, "fleet/commands.html", status=status, title="Commands",
                                commands=COMMANDS, sessions=sessions, recent=recent, result=result, error=error,
                                chosen=request.query_params.get("session_id", ""))

    def _command(self, form: FormData) -> tuple[str, dict[str, Any], dict[str, Any]]:
        kind = form_text(form, "type")
        if kind not in COMMANDS:
            raise CommandError("invalid_command", f"the command must be one of {', '.join(COMMANDS)}")
        session_id = form_text(form, "session_id")
        if not session_id:
            raise CommandError("invalid_command", "choose a session")
        args: dict[str, Any] = {}
        message = form_text(form, "message")
        if kind == "prompt" and not message:
            raise CommandError("invalid_command", "a prompt needs its text")
        if message:
            args["reason" if kind == "kill" else "message"] = message
        return kind, {"session_id": session_id}, args

    async def confirm(self, request: Request, session: ConsoleSession, form: FormData) -> Response:
        """The confirmation step, on the server: nothing is sent until the operator confirms."""
        try:
            kind, target, args = self._command(form)
        except CommandError as exc:
            return await self.commands(request, session, error=exc.message, status=400)
        found = self.sup.state.sessions.get(target["session_id"])
        return self.site.render(request, session, "fleet/confirm.html", title="Confirm", kind=kind,
                                label=COMMANDS[kind], target=target, args=args, message=form_text(form, "message"),
                                found=found.row() if found else None)

    async def send(self, request: Request, session: ConsoleSession, form: FormData) -> Response:
        if form_text(form, "confirmed") != "yes":
            return await self.confirm(request, session, form)
        try:
            kind, target, args = self._command(form)
            row = await self.sup.dispatcher.dispatch(
                kind, target, args, actor="console", source=request.client.host if request.client else None,
                idempotency_key=form_text(form, "idempotency_key") or None)
        except CommandError as exc:
            return await self.commands(request, session, error=f"{exc.code}: {exc.message}", status=exc.status)
        return await self.commands(request, session, result=row)

    async def cost(self, request: Request, session: ConsoleSession) -> Response:
        period = request.query_params.get("period", "today")
        period = period if period in PERIODS else "today"
        report = await self.sup.cost.report(period)
        return self.site.render(request, session, "fleet/cost.html", title="Cost", report=report, period=period,
                                periods=list(PERIODS))

    async def audit(self, request: Request, session: ConsoleSession) -> Response:
        rows = await self.sup.store.list_audit(limit=200, action=request.query_params.get("action") or None)
        return self.site.render(request, session, "fleet/audit.html", title="Audit", rows=rows)
