"""Agents on the gateway: ``model: "<agent>"`` on the chat APIs, the REST runs API and
sessions. The agent runtime (`AgentService`) is built at startup, on the store.

Routes: ``GET /v1/agents``, ``POST /v1/agents/{name}/runs`` (wait, SSE stream or
background), ``GET /v1/runs/{id}``, ``POST /v1/runs/{id}/cancel``,
``POST /v1/runs/{id}/approve``, ``GET /v1/sessions``, ``GET|DELETE /v1/sessions/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from corral.agents.events import RunFinished, TextOutput, UsageReported, event_json
from corral.agents.live import LiveRun
from corral.agents.messages import message_from_json, message_to_json
from corral.agents.registry import AgentRegistry
from corral.agents.runner import Runner
from corral.agents.service import AgentService, RunConflict, RunNotFound
from corral.agents.sessions import SUMMARY_ROLE, SessionConflict
from corral.gateway.access import METERED, caller_of
from corral.gateway.errors import ApiError
from corral.gateway.state import CallRecord, Gateway
from corral.llm.errors import ProviderError
from corral.llm.router import CallContext, Router
from corral.llm.types import (
    ChatRequest,
    ChatResult,
    FinishEvent,
    Message,
    ModelInfo,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
)
from corral.store import RunRecord, SessionRecord, Store

log = logging.getLogger("corral.gateway.agents")
SESSION_HEADER = "x-corral-session-id"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class AgentRunError(ProviderError):
    status = 500
    code = "agent_run_failed"


Meter = Callable[[str, CallContext, Usage, float], Awaitable[None]]  # alias, ctx, usage, started


class RouterModels:
    """The router as the runner's model access. With a meter, every model call an agent run
    makes is charged (usage row, spend, tpm) to the caller kept in ``ctx.extra``."""

    def __init__(self, router: Router, meter: Meter | None = None) -> None:
        self.router = router
        self.meter = meter

    async def complete(self, alias: str, request: ChatRequest, ctx: CallContext) -> ChatResult:
        started = time.perf_counter()
        result = await self.router.complete(alias, request, ctx)
        await self._charge(alias, ctx, result.usage, started)
        return result

    def stream(self, alias: str, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        events = self.router.stream(alias, request, ctx)
        return events if self.meter is None else self._metered(alias, events, ctx)

    async def _metered(self, alias: str, events: AsyncIterator[StreamEvent],
                       ctx: CallContext) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        usage = Usage()
        try:
            async for event in events:
                if isinstance(event, UsageEvent):
                    usage = usage + event.usage
                yield event
        finally:  # a stream that failed after reporting usage is charged what it reported
            await self._charge(alias, ctx, usage, started)

    async def _charge(self, alias: str, ctx: CallContext, usage: Usage, started: float) -> None:
        if self.meter is None or not (usage.input_tokens or usage.output_tokens):
            return
        try:
            await self.meter(alias, ctx, usage, started)
        except Exception:  # accounting never fails a run
            log.exception("could not charge a model call of an agent run")

    def context_window(self, alias: str) -> int | None:
        model = self.router.model_config(alias)
        return model.context_window if model is not None else None


class AgentMetrics:
    """``corral_agent_runs``, ``corral_agent_run_duration_seconds`` and ``corral_tool_calls``,
    in the gateway's metrics registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.runs = Counter("corral_agent_runs", "Agent runs by agent and outcome (completed, failed, cancelled, "
                            "input-required, requeued).", ["agent", "status"], registry=registry)
        self.duration = Histogram("corral_agent_run_duration_seconds", "Time an agent run spent executing.",
                                  ["agent"], registry=registry,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.tools = Counter("corral_tool_calls", "Tool calls by agent, tool and outcome (ok, error).",
                             ["agent", "tool", "outcome"], registry=registry)

    def tool_returned(self, agent: str, tool: str, is_error: bool) -> None:
        self.tools.labels(agent=agent, tool=tool, outcome="error" if is_error else "ok").inc()

    def run_finished(self, agent: str, status: str, seconds: float) -> None:
        self.runs.labels(agent=agent, status=status).inc()
        self.duration.labels(agent=agent).observe(seconds)


@dataclass
class Agents:
    """The gateway component (``gateway.components["agents"]``)."""

    gateway: Gateway
    registry: AgentRegistry
    service: AgentService | None = None
    own_store: Store | None = None
    warmup: asyncio.Task[None] | None = None
    metrics: AgentMetrics | None = None
    # request id -> (x-corral-session-id, owner): the chat routes hand agents only the request id
    pending_sessions: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # request id -> who the run is charged to (`caller_of`), for the same reason
    pending_callers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def require(self) -> AgentService:
        if self.service is None:
            raise ApiError(503, "The agent runtime is not started", code="not_ready")
        return self.service

    async def startup(self) -> None:
        from corral.agents.remote import RemoteAgents

        store = self.gateway.components.get("store")
        if store is None:
            database = self.gateway.config.database
            store = self.own_store = await Store.open(database.url, pool_size=database.pool_size)
            self.gateway.components["store"] = store
        remote = RemoteAgents()
        self.gateway.components["agents.remote"] = remote
        access = self.gateway.components.get("access")
        meter = getattr(access, "charge_run_call", None)
        runner = Runner(self.registry.agents, RouterModels(self.gateway.router, meter), remote=remote.call)
        cache = self.gateway.config.cache
        fanout = None
        if cache.url:  # any replica can stream any run
            from corral.agents.fanout import RedisRunEvents

            fanout = RedisRunEvents.from_url(cache.url, prefix=cache.prefix)
        self.service = AgentService(self.registry, runner, store, self.gateway.config.runs, observer=self.metrics,
                                    fanout=fanout)
        await self.service.start()
        # Connect MCP servers now rather than on the first run (``npx -y`` may download):
        # the first caller does not wait, and a broken server shows in the log at startup.
        self.warmup = asyncio.create_task(self._warm(), name="agents-warmup")

    async def _warm(self) -> None:
        for name, toolset in self.registry.toolsets.items():
            try:
                tools = await toolset.list_tools()
            except Exception as exc:
                log.warning("toolset %r is not available yet: %s", name, exc)
            else:
                log.info("toolset %r: %d tools", name, len(tools))

    async def shutdown(self) -> None:
        if self.warmup is not None:
            self.warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.warmup
        if self.service is not None:
            await self.service.stop()
            if self.service.fanout is not None:
                await self.service.fanout.aclose()
        remote = self.gateway.components.get("agents.remote")
        if remote is not None:
            await remote.aclose()
        await self.registry.aclose()
        if self.own_store is not None:
            await self.own_store.aclose()
            self.gateway.components.pop("store", None)


@dataclass
class AgentTarget:
    """An agent as a chat model: the final text streams as text deltas. Tool steps are not
    shown on the chat surfaces (the REST and A2A surfaces show them)."""

    agents: Agents
    name: str

    async def complete(self, request: ChatRequest, ctx: CallContext) -> ChatResult:
        accumulator = StreamAccumulator(self.name)
        async for event in self.stream(request, ctx):
            accumulator.add(event)
        return accumulator.result()

    async def stream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        service = self.agents.require()
        session_id, owner = self.agents.pending_sessions.pop(ctx.request_id, (None, None))
        caller = self.agents.pending_callers.pop(ctx.request_id, None)
        messages = chat_input(request.messages, continuing=session_id is not None)
        ctx.extra[METERED] = True  # the run's model calls are charged one by one
        try:
            _, live = await service.start_run(self.name, messages, session_id=session_id, owner=owner,
                                              request_id=ctx.request_id, caller=caller)
        except SessionConflict as exc:
            raise AgentRunError(str(exc)) from None
        assert live is not None
        usage = Usage()
        try:
            async for event in live.follow():
                if isinstance(event, TextOutput):
                    yield TextDelta(event.text)
                elif isinstance(event, UsageReported):
                    usage = usage + event.usage
                elif isinstance(event, RunFinished):
                    if event.status == "input-required":
                        yield TextDelta(f"\n[run {live.id} is waiting for approval: POST /v1/runs/{live.id}/approve]")
                    elif event.status != "completed":
                        raise AgentRunError(f"agent {self.name!r} run {live.id} {event.status}: {event.error}")
        finally:
            if live.finished is None and live.task is not None:  # the client went away
                live.task.cancel()
        yield UsageEvent(usage)
        yield FinishEvent("stop", model=self.name)


def chat_input(messages: list[Message], *, continuing: bool) -> list[Message]:
    """What a chat request adds to the conversation. The agent has its own instructions,
    so system messages are dropped; continuing a session, only the messages after the
    last assistant message are new."""
    kept = [m for m in messages if m.role != "system"]
    if continuing:
        for index in range(len(kept) - 1, -1, -1):
            if kept[index].role == "assistant":
                return kept[index + 1:]
    return kept


def owner_of(request: Request) -> str | None:
    """Who a session belongs to: the authenticated subject (set by the access interceptor)."""
    principal = getattr(request.state, "corral_principal", None)
    if principal is None or principal.kind == "anonymous" or principal.is_admin:
        return None
    return str(principal.subject)


class SessionHeader:
    """Interceptor: remembers ``x-corral-session-id`` for the agent target of the request."""

    def __init__(self, agents: Agents) -> None:
        self.agents = agents

    async def admit(self, request: Request, model: str, surface: str) -> None:
        # The runs API, A2A and MCP start their runs themselves (and have no `finish` to clean up).
        if surface in ("agents", "a2a", "mcp") or model not in self.agents.registry.agents:
            return
        caller = caller_of(request, model)
        if caller is not None:
            self.agents.pending_callers[request.state.request_id] = caller
        session_id = request.headers.get(SESSION_HEADER)
        if session_id:
            self.agents.pending_sessions[request.state.request_id] = (session_id, owner_of(request))

    async def finish(self, request: Request, record: Any) -> None:
        self.agents.pending_sessions.pop(request.state.request_id, None)
        self.agents.pending_callers.pop(request.state.request_id, None)


def install(gateway: Gateway) -> None:
    registry = AgentRegistry.from_config(gateway.config)
    agents = Agents(gateway, registry)
    gateway_metrics = gateway.components.get("metrics")
    if gateway_metrics is not None:
        agents.metrics = AgentMetrics(gateway_metrics.registry)
    gateway.components["agents"] = agents
    if registry.agents:  # no agent, no session header to remember (and no cost on every model call)
        gateway.interceptors.append(SessionHeader(agents))

    def resolve(model: str) -> AgentTarget | None:
        agent = registry.get(model)
        return AgentTarget(agents, model) if agent is not None and agent.config.visibility == "public" else None

    def list_models() -> list[ModelInfo]:
        return [ModelInfo(id=a.name, owned_by="corral-agent") for a in registry.public()]

    gateway.resolvers.append(resolve)
    gateway.model_listers.append(list_models)
    gateway.startup_hooks.append(agents.startup)
    gateway.shutdown_hooks.append(agents.shutdown)


def routes(gateway: Gateway) -> list[BaseRoute]:
    api = _Api(gateway, gateway.components["agents"])
    return [
        Route("/v1/agents", api.list_agents, methods=["GET"]),
        Route("/v1/agents/{name}/runs", api.create_run, methods=["POST"]),
        Route("/v1/runs/{run_id}", api.get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}/events", api.run_events, methods=["GET"]),
        Route("/v1/runs/{run_id}/cancel", api.cancel_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/approve", api.approve_run, methods=["POST"]),
        Route("/v1/sessions", api.list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", api.get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}", api.delete_session, methods=["DELETE"]),
    ]


class _Api:
    def __init__(self, gateway: Gateway, agents: Agents) -> None:
        self.gateway = gateway
        self.agents = agents

    async def _principal(self, request: Request) -> Any:
        """Authenticate without naming a model (listing routes); None without the access module."""
        access = self.gateway.components.get("access")
        if access is None:
            return None
        principal = await access.principal(request)
        request.state.corral_principal = principal
        return principal

    async def _session(self, request: Request) -> SessionRecord:
        store = self.agents.require().store
        record = await store.sessions.get(request.path_params["session_id"])
        if record is not None:
            await self.gateway.admit(request, record.agent, "agents")
            owner = owner_of(request)
            if owner is None or record.owner in (None, owner):
                return record
        raise ApiError(404, f"unknown session {request.path_params['session_id']!r}", code="not_found")

    async def list_agents(self, request: Request) -> Response:
        await self._principal(request)
        data = [{"id": a.name, "object": "agent", "description": a.config.description, "type": a.config.type,
                 "model": a.config.model} for a in self.agents.registry.public()]
        return json_response({"object": "list", "data": data})

    async def create_run(self, request: Request) -> Response:
        name = request.path_params["name"]
        agent = self.agents.registry.get(name)
        if agent is None or agent.config.visibility != "public":
            raise ApiError(404, f"unknown agent {name!r}", code="not_found")
        request.state.corral_started = time.perf_counter()
        await self.gateway.admit(request, name, "agents")
        body = await _body(request)
        mode = body.get("mode", "wait")
        if mode not in ("wait", "stream", "background"):
            raise ApiError(400, "mode must be wait, stream or background", param="mode")
        session_id = body.get("session_id") or request.headers.get(SESSION_HEADER)
        try:
            record, live = await self.agents.require().start_run(
                name, parse_input(body), session_id=session_id, request_id=request.state.request_id,
                mode="background" if mode == "background" else "foreground", variables=body.get("variables") or {},
                owner=owner_of(request), caller=caller_of(request, name))
        except (RunNotFound, SessionConflict) as exc:
            raise errors_to_api(exc) from None
        if live is None:
            return json_response(run_json(record), 202)
        if mode == "stream":
            return stream_response(self._accounted(request, name, live, _run_events(live, record, started_here=True)))
        try:
            final = await self.agents.require().wait(record.id, float(body.get("timeout") or agent.config.timeout + 10))
        finally:
            await self._account(request, name, live, stream=False)
        return json_response(run_json(final))

    async def _account(self, request: Request, name: str, live: LiveRun, *, stream: bool) -> None:
        """The run's tokens go through the interceptors like a model call's, for the metrics
        (its usage rows and spend were charged per model call)."""
        usage = Usage()
        for event in live.events:
            if isinstance(event, UsageReported):
                usage = usage + event.usage
        started = getattr(request.state, "corral_started", time.perf_counter())
        ctx = CallContext(request_id=request.state.request_id, extra={METERED: True})
        record = CallRecord(request.state.request_id, "agents", name, stream, ctx, started, usage=usage)
        await self.gateway.finish(request, record)

    async def _accounted(self, request: Request, name: str, live: LiveRun,
                         events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in events:
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                await self._account(request, name, live, stream=True)

    async def get_run(self, request: Request) -> Response:
        service = self.agents.require()
        run_id = request.path_params["run_id"]
        wait = request.query_params.get("wait")
        try:
            record = await (service.wait(run_id, float(wait)) if wait else service.get(run_id))
        except (RunNotFound, ValueError) as exc:
            raise errors_to_api(exc) if isinstance(exc, RunNotFound) else ApiError(400, "bad wait") from None
        await self.gateway.admit(request, record.agent, "agents")
        return json_response(run_json(record))

    async def run_events(self, request: Request) -> Response:
        """Join a run's event stream (SSE): every event so far, then live ones. A run that is
        queued or executing on another replica is followed through Redis when configured;
        otherwise (or once it is over) it gets its current state as one ``run.state`` event."""
        service = self.agents.require()
        try:
            record = await service.get(request.path_params["run_id"])
        except RunNotFound as exc:
            raise errors_to_api(exc) from None
        await self.gateway.admit(request, record.agent, "agents")
        live = service.live.get(record.id)
        if live is not None:
            return stream_response(_run_events(live, record))
        if service.fanout is not None and record.state in ("queued", "running"):
            return stream_response(_followed_events(service, record))

        async def once() -> AsyncIterator[dict[str, Any]]:
            yield {"type": "run.state", "run": run_json(record)}

        return stream_response(once())

    async def cancel_run(self, request: Request) -> Response:
        service = self.agents.require()
        try:
            record = await service.get(request.path_params["run_id"])
            await self.gateway.admit(request, record.agent, "agents")
            return json_response(run_json(await service.cancel(record.id)))
        except (RunNotFound, RunConflict) as exc:
            raise errors_to_api(exc) from None

    async def approve_run(self, request: Request) -> Response:
        service = self.agents.require()
        body = await _body(request)
        decisions = body.get("decisions")
        if decisions is not None and not (isinstance(decisions, dict)
                                          and all(isinstance(v, bool) for v in decisions.values())):
            raise ApiError(400, "decisions must map tool call ids to true/false", param="decisions")
        try:
            record = await service.get(request.path_params["run_id"])
            await self.gateway.admit(request, record.agent, "agents")
            record = await service.approve(record.id, approved=bool(body.get("approved", True)), decisions=decisions)
        except (RunNotFound, RunConflict) as exc:
            raise errors_to_api(exc) from None
        if body.get("wait"):
            record = await service.wait(record.id, float(body.get("timeout") or 60))
        return json_response(run_json(record))

    async def list_sessions(self, request: Request) -> Response:
        store = self.agents.require().store
        await self._principal(request)
        try:
            limit = min(int(request.query_params.get("limit", "100")), 1000)
        except ValueError:
            raise ApiError(400, "limit must be an integer", param="limit") from None
        # A key sees its own sessions; the master key (or no auth at all) sees every session.
        records = await store.sessions.list(agent=request.query_params.get("agent"), owner=owner_of(request),
                                            limit=limit)
        return json_response({"object": "list", "data": [session_json(r) for r in records]})

    async def get_session(self, request: Request) -> Response:
        store = self.agents.require().store
        record = await self._session(request)
        stored = await store.sessions.messages(record.id)
        messages = [{"seq": m.seq, "role": m.role, "run_id": m.run_id, "created_at": m.created_at.isoformat(),
                     **({"content": m.content} if m.role == SUMMARY_ROLE else _plain(m.content))}
                    for m in stored]
        return json_response({**session_json(record), "messages": messages})

    async def delete_session(self, request: Request) -> Response:
        store = self.agents.require().store
        record = await self._session(request)
        await store.sessions.delete(record.id)
        return json_response({"id": record.id, "object": "session.deleted", "deleted": True})


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _plain(content: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API shows it: text as a string, tool calls and results as they were."""
    message = message_from_json(content)
    data: dict[str, Any] = {"content": message.text_content}
    if message.tool_calls:
        data["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


async def _run_events(live: Any, record: RunRecord, *, started_here: bool = False) -> AsyncIterator[dict[str, Any]]:
    yield {"type": "run.created", "run": run_json(record)}
    try:
        async for event in live.follow():
            yield event_json(event)
    finally:
        # The client that started a stream-mode run went away: nobody gets its answer. A
        # client that only joined (GET .../events) leaves the run alone.
        if started_here and live.finished is None and live.task is not None:
            live.task.cancel()


async def _followed_events(service: AgentService, record: RunRecord) -> AsyncIterator[dict[str, Any]]:
    """A queued run, or one executing on another replica, through the fan-out; the stored
    state if its events stop short of ``run.finished``."""
    yield {"type": "run.created", "run": run_json(record)}
    last = None
    async for event in service.follow(record):
        last = event
        yield event
    if last is None or last.get("type") != "run.finished":
        yield {"type": "run.state", "run": run_json(await service.get(record.id))}


# ---- JSON shapes shared by the routes, A2A and MCP -------------------------------


def run_json(record: RunRecord) -> dict[str, Any]:
    output = record.output if isinstance(record.output, dict) else {}
    return {
        "id": record.id, "object": "run", "agent": record.agent, "session_id": record.session_id,
        "state": record.state, "output": output.get("output"), "usage": output.get("usage"), "error": record.error,
        "pending_approvals": record.input.get("pending_approvals", []) if record.state == "input-required" else [],
        "attempts": record.attempts, "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def session_json(record: SessionRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "session", "agent": record.agent, "owner": record.owner,
            "title": record.title, "metadata": record.metadata, "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat()}


def json_response(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event.get("type", "message")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def parse_input(body: dict[str, Any]) -> list[Message]:
    """``input`` as a string, or ``messages`` as OpenAI-style or neutral messages."""
    if isinstance(body.get("input"), str):
        return [Message.text("user", body["input"])]
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "give `input` (a string) or `messages` (a non-empty list)", param="input")
    try:
        return [message_from_json(m) for m in raw]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ApiError(400, f"invalid messages: {exc}", param="messages") from None


def stream_response(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        with contextlib.suppress(StopAsyncIteration):
            async for event in events:
                yield sse(event)

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


__all__ = [
    "SUMMARY_ROLE",
    "AgentTarget",
    "Agents",
    "event_json",
    "install",
    "message_to_json",
    "routes",
    "run_json",
    "session_json",
]


def errors_to_api(exc: Exception) -> ApiError:
    if isinstance(exc, RunNotFound):
        return ApiError(404, str(exc), code="not_found")
    if isinstance(exc, RunConflict | SessionConflict):
        return ApiError(409, str(exc), code="conflict")
    raise exc
