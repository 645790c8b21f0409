"""The supervisor's HTTP API (Starlette): health, metrics, nodes, sessions, events, commands,
cost and audit. Everything under /api/v1 needs the fleet token as a Bearer token; the
chat-ops endpoints under /chatops check Slack's and Discord's request signatures instead."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from corral.fleet.supervisor.auth import bearer
from corral.fleet.supervisor.commands import CommandError
from corral.fleet.supervisor.discord import DiscordEndpoint
from corral.fleet.supervisor.slack import SlackEndpoint

if TYPE_CHECKING:
    from corral.fleet.supervisor.app import Supervisor

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _data(data: Any, **meta: Any) -> JSONResponse:
    return JSONResponse({"data": data, "meta": meta})


def _int(request: Request, name: str, default: int, maximum: int = 1000) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return max(0, min(maximum, int(raw)))
    except ValueError:
        raise CommandError("invalid_query", f"{name} must be an integer") from None


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
    rows = [n.row() for n in sup.state.nodes.values()]
    if status := request.query_params.get("status"):
        rows = [r for r in rows if r["status"] == status]
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
    sessions, _ = await list_sessions(sup, {"node_id": found.node_id}, _int(request, "limit", 1000, 10000))
    return _data({**found.row(), "sessions": sessions})


async def sessions(request: Request) -> Response:
    q = request.query_params
    limit = _int(request, "limit", 1000, 10000)
    rows, total = await list_sessions(_sup(request), {k: q.get(k) for k in ("node_id", "project", "state")}, limit)
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
    q = request.query_params
    rows = await sup.store.list_events(
        session_id=q.get("session_id"),
        node_id=q.get("node_id"),
        type_prefix=q.get("type"),
        after_id=_int(request, "after", 0, 2**62),
        limit=_int(request, "limit", 100),
    )
    return _data(rows, total=len(rows), next_after=rows[-1]["id"] if rows else _int(request, "after", 0, 2**62))


async def commands_list(request: Request) -> Response:
    sup = _sup(request)
    rows = await sup.store.list_commands(_int(request, "limit", 100))
    return _data(rows, total=len(rows))


async def command_get(request: Request) -> Response:
    sup = _sup(request)
    row = await sup.store.get_command(command_id=request.path_params["command_id"])
    return _data(row) if row else _error(404, "not_found", "no such command")


async def command_post(request: Request) -> Response:
    sup = _sup(request)
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "invalid_json", "body must be JSON")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return _error(400, "invalid_command", "body needs a string `type`")
    target, args = body.get("target") or {}, body.get("args") or {}
    timeout = body.get("timeout")
    if not isinstance(target, dict) or not isinstance(args, dict):
        return _error(400, "invalid_command", "`target` and `args` must be objects")
    if timeout is not None and (not isinstance(timeout, int | float) or not 0 < timeout <= 3600):
        return _error(400, "invalid_command", "`timeout` must be seconds in (0, 3600]")
    key = body.get("idempotency_key")
    source = request.client.host if request.client else None
    row = await sup.dispatcher.dispatch(
        body["type"],
        target,
        args,
        wait_seconds=timeout,
        idempotency_key=str(key) if key else None,
        actor=str(body.get("actor") or "api"),
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
    rows = await sup.store.list_audit(limit=_int(request, "limit", 100), action=request.query_params.get("action"))
    return _data(rows, total=len(rows))


def build_http_app(sup: Supervisor) -> Starlette:
    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/api/v1/nodes", guarded(nodes)),
        Route("/api/v1/nodes/{node_id}", guarded(node)),
        Route("/api/v1/sessions", guarded(sessions)),
        Route("/api/v1/sessions/{session_id}", guarded(session)),
        Route("/api/v1/events", guarded(events)),
        Route("/api/v1/commands", guarded(commands_list), methods=["GET"]),
        Route("/api/v1/commands", guarded(command_post), methods=["POST"]),
        Route("/api/v1/commands/{command_id}", guarded(command_get)),
        Route("/api/v1/cost/{period}", guarded(cost)),
        Route("/api/v1/audit", guarded(audit)),
        # signed by Slack / Discord, not by the fleet token
        Route("/chatops/slack", SlackEndpoint(sup.chatops, sup.http_client).handle, methods=["POST"]),
        Route("/chatops/discord", DiscordEndpoint(sup.chatops).handle, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.sup = sup
    return app
