"""The supervisor's HTTP API (Starlette): health, metrics, nodes, sessions, events, commands,
cost and audit. Everything under /api/v1 needs the fleet token as a Bearer token; the
chat-ops endpoints under /chatops check Slack's and Discord's request signatures instead.

`operations()` is the one list of routes: the app is built from it and so is
`/openapi.json` (`openapi.py`), with the models of `api.py` that validate each request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from corral.console.fleet import FleetConsole
from corral.fleet.supervisor import api
from corral.fleet.supervisor.auth import bearer
from corral.fleet.supervisor.commands import CommandError
from corral.fleet.supervisor.discord import DiscordEndpoint
from corral.fleet.supervisor.slack import SlackEndpoint

if TYPE_CHECKING:
    from corral.fleet.supervisor.app import Supervisor

Handler = Callable[[Request], Awaitable[Response]]
QueryT = TypeVar("QueryT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: how it is served and how `/openapi.json` describes it."""

    method: Literal["GET", "POST"]
    path: str
    handler: Handler
    summary: str
    response: Any  # a type pydantic can describe (the 200 answer)
    query: type[BaseModel] | None = None
    body: tuple[type[BaseModel], ...] = ()  # request body models (several: alternatives)
    body_media_type: str = "application/json"
    auth: Literal["bearer", "slack", "discord", "none"] = "bearer"
    response_media_type: str = "application/json"
    errors: tuple[int, ...] = ()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _data(data: Any, **meta: Any) -> JSONResponse:
    return JSONResponse({"data": data, "meta": meta})


def _query(request: Request, model: type[QueryT]) -> QueryT:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise CommandError("invalid_query", api.first_error(exc)) from None


def _sup(request: Request) -> Supervisor:
    sup: Supervisor = request.app.state.sup
    return sup


def guarded(handler: Handler) -> Handler:
    async def wrapper(request: Request) -> Response:
        if not _sup(request).tokens.valid(bearer(request.headers.get("authorization"))):
            return _error(401, "unauthorized", "missing or invalid bearer token")
        try:
            return await handler(request)
        except CommandError as exc:
            return _error(exc.status, exc.code, exc.message)

    return wrapper


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    sup = _sup(request)
    checks = {"store": await sup.store.ping(), "hub": sup.hub.listening}
    ok = all(checks.values())
    config = {"hash": sup.config_hash, "reloads": dict(sup.reloads), "last_reload_error": sup.reload_error}
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks, "config": config},
                        status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    sup = _sup(request)
    return PlainTextResponse(sup.metrics.render(), media_type="text/plain; version=0.0.4")


async def nodes(request: Request) -> Response:
    sup = _sup(request)
    q = _query(request, api.NodesQuery)
    rows = [n.row() for n in sup.state.nodes.values()]
    if q.status:
        rows = [r for r in rows if r["status"] == q.status]
    return _data(rows, total=len(rows))


async def list_sessions(sup: Supervisor, filters: dict[str, str | None],
                        limit: int) -> tuple[list[dict[str, Any]], int]:
    """Memory's sessions (the live ones, and the current values: a restarted supervisor holds
    its running sessions as unreachable until their node is back) plus the stored ones it no
    longer holds (finished and evicted), oldest first. ``total`` counts the stored matches."""
    live = sup.state.sessions
    # the first `limit` stored rows not in memory are among the first `limit + len(live)`
    stored, total = await sup.store.list_sessions(**filters, limit=limit + len(live))
    rows = [r for r in stored if r["session_id"] not in live]
    rows += [r for r in (s.row() for s in live.values()) if all(not v or r[k] == v for k, v in filters.items())]
    rows.sort(key=lambda r: r["created_at"])
    return rows[:limit], max(total, len(rows))


async def node(request: Request) -> Response:
    sup = _sup(request)
    found = sup.state.nodes.get(request.path_params["node_id"])
    if found is None:
        return _error(404, "not_found", f"no node {request.path_params['node_id']!r}")
    limit = min(_query(request, api.NodeQuery).limit, 10000)
    sessions, _ = await list_sessions(sup, {"node_id": found.node_id}, limit)
    return _data({**found.row(), "sessions": sessions})


async def sessions(request: Request) -> Response:
    q = _query(request, api.SessionsQuery)
    limit = min(q.limit, 10000)
    filters: dict[str, str | None] = {"node_id": q.node_id, "project": q.project, "state": q.state}
    rows, total = await list_sessions(_sup(request), filters, limit)
    return _data(rows, total=total, limit=limit)


async def session(request: Request) -> Response:
    sup = _sup(request)
    session_id = request.path_params["session_id"]
    found = sup.state.sessions.get(session_id)
    if found is not None:
        return _data(found.row())
    stored = await sup.store.get_sessions([session_id])  # finished, and evicted from memory
    if not stored:
        return _error(404, "not_found", f"no session {session_id!r}")
    return _data(stored[0])


async def events(request: Request) -> Response:
    sup = _sup(request)
    q = _query(request, api.EventsQuery)
    rows = await sup.store.list_events(session_id=q.session_id, node_id=q.node_id, type_prefix=q.type,
                                       after_id=q.after, limit=min(q.limit, 1000))
    return _data(rows, total=len(rows), next_after=rows[-1]["id"] if rows else q.after)


async def commands_list(request: Request) -> Response:
    sup = _sup(request)
    rows = await sup.store.list_commands(min(_query(request, api.LimitQuery).limit, 1000))
    return _data(rows, total=len(rows))


async def command_get(request: Request) -> Response:
    sup = _sup(request)
    row = await sup.store.get_command(command_id=request.path_params["command_id"])
    return _data(row) if row else _error(404, "not_found", "no such command")


async def command_post(request: Request) -> Response:
    sup = _sup(request)
    try:
        raw = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "invalid_json", "body must be JSON")
    try:
        body = api.CommandRequest.model_validate(raw)
    except ValidationError as exc:
        return _error(400, "invalid_command", api.first_error(exc))
    source = request.client.host if request.client else None
    row = await sup.dispatcher.dispatch(
        body.type,
        body.target.model_dump(exclude_none=True),
        body.args,
        wait_seconds=body.timeout,
        idempotency_key=body.idempotency_key or None,
        actor=body.actor or "api",
        source=source,
    )
    return _data(row)


async def cost(request: Request) -> Response:
    sup = _sup(request)
    period = request.path_params["period"]
    try:
        return _data(await sup.cost.report(period))
    except ValueError as exc:
        return _error(400, "invalid_period", str(exc))


async def audit(request: Request) -> Response:
    sup = _sup(request)
    q = _query(request, api.AuditQuery)
    rows = await sup.store.list_audit(limit=min(q.limit, 1000), action=q.action)
    return _data(rows, total=len(rows))


async def openapi(request: Request) -> Response:
    document: dict[str, Any] = request.app.state.openapi
    return JSONResponse(document)


def operations(sup: Supervisor) -> list[Operation]:
    slack = SlackEndpoint(sup.chatops, sup.http_client)
    discord = DiscordEndpoint(sup.chatops)
    D = api.Data
    return [
        Operation("GET", "/healthz", healthz, "The process is up", api.Health, auth="none"),
        Operation("GET", "/readyz", readyz, "The store answers and the hub listens (503 otherwise)", api.Ready,
                  auth="none"),
        Operation("GET", "/metrics", metrics, "Prometheus metrics", str, auth="none",
                  response_media_type="text/plain"),
        Operation("GET", "/openapi.json", openapi, "This document (OpenAPI 3.1)", dict[str, Any], auth="none"),
        Operation("GET", "/api/v1/nodes", guarded(nodes), "Nodes", D[list[api.Node]], query=api.NodesQuery,
                  errors=(400,)),
        Operation("GET", "/api/v1/nodes/{node_id}", guarded(node), "A node with its sessions", D[api.NodeDetail],
                  query=api.NodeQuery, errors=(400, 404)),
        Operation("GET", "/api/v1/sessions", guarded(sessions), "Sessions, oldest first (finished ones from the store)",
                  D[list[api.Session]], query=api.SessionsQuery, errors=(400,)),
        Operation("GET", "/api/v1/sessions/{session_id}", guarded(session), "A session", D[api.Session],
                  errors=(404,)),
        Operation("GET", "/api/v1/events", guarded(events), "Stored events, oldest first", D[list[api.Event]],
                  query=api.EventsQuery, errors=(400,)),
        Operation("GET", "/api/v1/commands", guarded(commands_list), "Recent commands, newest first",
                  D[list[api.Command]], query=api.LimitQuery, errors=(400,)),
        Operation("POST", "/api/v1/commands", guarded(command_post), "Run a command and wait for its result",
                  D[api.Command], body=(api.CommandRequest,), errors=(400, 404, 409)),
        Operation("GET", "/api/v1/commands/{command_id}", guarded(command_get), "A command", D[api.Command],
                  errors=(404,)),
        Operation("GET", "/api/v1/cost/{period}", guarded(cost), "Cost report for today, the week or the month",
                  D[api.CostReport], errors=(400,)),
        Operation("GET", "/api/v1/audit", guarded(audit), "The audit log, newest first", D[list[api.AuditEntry]],
                  query=api.AuditQuery, errors=(400,)),
        Operation("POST", "/chatops/slack", slack.handle, "Slack slash command or interactivity payload",
                  api.SlackMessage, body=(api.SlackSlashCommand, api.SlackInteractivity),
                  body_media_type="application/x-www-form-urlencoded", auth="slack", errors=(400, 401, 404)),
        Operation("POST", "/chatops/discord", discord.handle, "Discord interaction (PING or application command)",
                  api.DiscordResponse, body=(api.DiscordInteraction,), auth="discord", errors=(400, 401, 404)),
    ]


def build_http_app(sup: Supervisor) -> Starlette:
    from corral.fleet.supervisor.openapi import document

    ops = operations(sup)
    app = Starlette(routes=[*(Route(op.path, op.handler, methods=[op.method]) for op in ops),
                            *FleetConsole(sup).routes()])  # the web console at /ui/ (docs/console.md)
    app.state.sup = sup
    app.state.openapi = document(ops)
    return app
