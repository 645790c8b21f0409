"""The REST runs and sessions API: ``GET /v1/agents``, ``POST /v1/agents/{name}/runs``
(wait, SSE stream or background), ``GET /v1/runs/{id}`` (and ``/events``),
``POST /v1/runs/{id}/cancel``, ``POST /v1/runs/{id}/approve``, ``GET /v1/sessions``,
``GET|DELETE /v1/sessions/{id}``.

Starting or approving a run is a call on the agent: admitted like a chat request (the
caller may use the agent; rate limits and budget), its model calls charged to the
caller. Reading, following or cancelling a run is not a model call: the caller must be
allowed the agent and own the run (the master key may read any), and no rate limit is
spent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from corral.agents.events import UsageReported, event_json
from corral.agents.live import LiveRun
from corral.agents.messages import message_from_json
from corral.agents.service import AgentService, RunConflict, RunNotFound
from corral.agents.sessions import SUMMARY_ROLE, SessionConflict
from corral.gateway.agent_runtime import AgentRuntime
from corral.gateway.auth import Principal
from corral.gateway.call import Call, owner_of
from corral.gateway.errors import ApiError
from corral.gateway.http import json_object, json_response
from corral.gateway.openai_format import validation_error
from corral.gateway.openapi.control import RunApproveBody, RunCreateBody, RunGetQuery, SessionListQuery
from corral.gateway.pipeline import SESSION_HEADER, CallPipeline
from corral.gateway.streaming import EventStreamResponse, sse_event
from corral.llm.types import Message, Usage
from corral.store import RunRecord, SessionRecord


class RunsApi:
    def __init__(self, runtime: AgentRuntime, pipeline: CallPipeline) -> None:
        self.runtime = runtime
        self.pipeline = pipeline

    @property
    def service(self) -> AgentService:
        return self.runtime.service

    async def list_agents(self, request: Request) -> Response:
        await self.pipeline.authenticate(request)
        data = [{"id": a.name, "object": "agent", "description": a.config.description, "type": a.config.type,
                 "model": a.config.model} for a in self.runtime.registry.public()]
        return json_response({"object": "list", "data": data})

    async def create_run(self, request: Request) -> Response:
        principal = await self.pipeline.authenticate(request)  # before anything is told about the agent
        name = request.path_params["name"]
        agent = self.runtime.registry.get(name)
        if agent is None or agent.config.visibility != "public":
            raise ApiError(404, f"unknown agent {name!r}", code="not_found")
        call = self.pipeline.begin(request, name, "agents")
        call.metered = True  # the run's model calls are charged one by one
        await self.pipeline.admit(request, call, principal)
        body = validated(RunCreateBody, await json_object(request))
        mode = body.mode
        session_id = body.session_id or request.headers.get(SESSION_HEADER)
        try:
            record, live = await self.service.start_run(
                name, parse_input(body), session_id=session_id, request_id=call.request_id,
                mode="background" if mode == "background" else "foreground", variables=body.variables or {},
                owner=owner_of(call.principal), caller=call.caller(), trace=call.trace_headers)
        except (RunNotFound, SessionConflict) as exc:
            raise errors_to_api(exc) from None
        if live is None:
            return json_response(run_json(record), 202)
        call.stream = mode == "stream"
        if call.stream:
            return stream_response(self._finished_after(call, live, run_events(live, record, started_here=True)))
        try:
            final = await self.service.wait(record.id, body.timeout or agent.config.timeout + 10)
        finally:
            await self._finish(call, live)
        return json_response(run_json(final))

    async def _finish(self, call: Call, live: LiveRun) -> None:
        """The run's tokens go through `finish` like a model call's, for the metrics (its
        usage rows and spend were charged per model call)."""
        usage = Usage()
        for event in live.events:
            if isinstance(event, UsageReported):
                usage = usage + event.usage
        call.usage = usage
        await self.pipeline.finish(call)

    async def _finished_after(self, call: Call, live: LiveRun,
                              events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in events:
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(call, live)

    async def _readable_run(self, request: Request) -> RunRecord:
        """The run of the path, if the caller may see it (else 404: its existence is not told)."""
        principal = await self.pipeline.authenticate(request)
        try:
            record = await self.service.get(request.path_params["run_id"])
        except RunNotFound as exc:
            raise errors_to_api(exc) from None
        if not may_read(principal, record):
            raise errors_to_api(RunNotFound(record.id))
        return record

    async def get_run(self, request: Request) -> Response:
        query = validated(RunGetQuery, dict(request.query_params))
        record = await self._readable_run(request)
        if query.wait is not None:
            record = await self.service.wait(record.id, query.wait)
        return json_response(run_json(record))

    async def run_events(self, request: Request) -> Response:
        """Join a run's event stream (SSE): every event so far, then live ones. A run that is
        queued or executing on another replica is followed through Redis when configured;
        otherwise (or once it is over) it gets its current state as one ``run.state`` event."""
        record = await self._readable_run(request)
        live = self.service.live.get(record.id)
        if live is not None:
            return stream_response(run_events(live, record))
        if self.service.fanout is not None and record.state in ("queued", "running"):
            last = request.headers.get("last-event-id")  # a follower resuming where it was cut
            after = last if last and _ENTRY_ID.match(last) else None
            return stream_with_ids(followed_events(self.service, record, after))

        async def once() -> AsyncIterator[dict[str, Any]]:
            yield {"type": "run.state", "run": run_json(record)}

        return stream_response(once())

    async def cancel_run(self, request: Request) -> Response:
        record = await self._readable_run(request)
        try:
            return json_response(run_json(await self.service.cancel(record.id)))
        except (RunNotFound, RunConflict) as exc:
            raise errors_to_api(exc) from None

    async def approve_run(self, request: Request) -> Response:
        record = await self._readable_run(request)
        body = validated(RunApproveBody, await json_object(request))
        # Approval resumes the run's model calls: admitted like starting it.
        await self.pipeline.admit(request, self.pipeline.begin(request, record.agent, "agents"))
        try:
            record = await self.service.approve(record.id, approved=body.approved, decisions=body.decisions)
        except (RunNotFound, RunConflict) as exc:
            raise errors_to_api(exc) from None
        if body.wait:
            record = await self.service.wait(record.id, body.timeout or 60)
        return json_response(run_json(record))

    async def _session(self, request: Request) -> SessionRecord:
        principal = await self.pipeline.authenticate(request)
        record = await self.service.store.sessions.get(request.path_params["session_id"])
        if record is not None and principal.may_use(record.agent):
            owner = owner_of(principal)
            if owner is None or record.owner in (None, owner):
                return record
        raise ApiError(404, f"unknown session {request.path_params['session_id']!r}", code="not_found")

    async def list_sessions(self, request: Request) -> Response:
        principal = await self.pipeline.authenticate(request)
        query = validated(SessionListQuery, dict(request.query_params))
        # A key sees its own sessions; the master key (or no auth at all) sees every session.
        records = await self.service.store.sessions.list(agent=query.agent, owner=owner_of(principal),
                                                         limit=query.limit)
        return json_response({"object": "list", "data": [session_json(r) for r in records]})

    async def get_session(self, request: Request) -> Response:
        record = await self._session(request)
        stored = await self.service.store.sessions.messages(record.id)
        messages = [{"seq": m.seq, "role": m.role, "run_id": m.run_id, "created_at": m.created_at.isoformat(),
                     **({"content": m.content} if m.role == SUMMARY_ROLE else _plain(m.content))}
                    for m in stored]
        return json_response({**session_json(record), "messages": messages})

    async def delete_session(self, request: Request) -> Response:
        record = await self._session(request)
        await self.service.store.sessions.delete(record.id)
        return json_response({"id": record.id, "object": "session.deleted", "deleted": True})


_ENTRY_ID = re.compile(r"^\d{1,9}-\d{1,12}$")


def may_read(principal: Principal, record: RunRecord) -> bool:
    """The master key (or auth off) reads every run; a caller reads the runs of agents it
    may use that it started (same key, or same subject for JWT and static keys)."""
    if principal.is_admin or principal.kind == "anonymous":
        return True
    if not principal.may_use(record.agent):
        return False
    caller = record.input.get("caller")
    if not isinstance(caller, Mapping):
        return False
    if principal.key_id is not None:
        return caller.get("key_id") == principal.key_id
    return caller.get("kind") == principal.kind and caller.get("subject") == principal.subject


def _plain(content: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API shows it: text as a string, tool calls and results as they were."""
    message = message_from_json(content)
    data: dict[str, Any] = {"content": message.text_content}
    if message.tool_calls:
        data["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


async def run_events(live: LiveRun, record: RunRecord, *,
                     started_here: bool = False) -> AsyncIterator[dict[str, Any]]:
    yield {"type": "run.created", "run": run_json(record)}
    try:
        async for event in live.follow():
            yield event_json(event)
    finally:
        # The client that started a stream-mode run went away: nobody gets its answer. A
        # client that only joined (GET .../events) leaves the run alone.
        if started_here and live.finished is None and live.task is not None:
            live.task.cancel()


async def followed_events(service: AgentService, record: RunRecord,
                          after: str | None = None) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """A queued run, or one executing on another replica, through the fan-out, each event
    with its SSE id (``<attempt>-<seq>``; a ``run.attempt`` event marks a takeover); the
    stored state if its events stop short of ``run.finished``."""
    yield None, {"type": "run.created", "run": run_json(record)}
    last = None
    async for entry_id, event in service.follow(record, after):
        last = event
        yield entry_id, event
    if last is None or last.get("type") != "run.finished":
        yield None, {"type": "run.state", "run": run_json(await service.get(record.id))}


def stream_response(events: AsyncIterator[dict[str, Any]]) -> EventStreamResponse:
    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse_event(event)

    return EventStreamResponse(body())


def stream_with_ids(events: AsyncIterator[tuple[str | None, dict[str, Any]]]) -> EventStreamResponse:
    async def body() -> AsyncIterator[bytes]:
        async for entry_id, event in events:
            yield sse_event(event, id=entry_id)

    return EventStreamResponse(body())


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


def parse_input(body: RunCreateBody) -> list[Message]:
    """``input`` as a string, or ``messages`` as OpenAI-style or neutral messages."""
    if body.input is not None:
        return [Message.text("user", body.input)]
    if not body.messages:
        raise ApiError(400, "give `input` (a string) or `messages` (a non-empty list)", param="input")
    try:
        return [message_from_json(m.model_dump(exclude_none=True)) for m in body.messages]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ApiError(400, f"invalid messages: {exc}", param="messages") from None


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any]) -> M:
    """A body or query validated by the model the OpenAPI document publishes for it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def errors_to_api(exc: Exception) -> ApiError:
    if isinstance(exc, RunNotFound):
        return ApiError(404, str(exc), code="not_found")
    if isinstance(exc, RunConflict | SessionConflict):
        return ApiError(409, str(exc), code="conflict")
    raise exc
