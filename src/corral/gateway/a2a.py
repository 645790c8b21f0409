"""A2A: each public agent is an A2A server (JSON-RPC + SSE) at ``/a2a/{name}``.

The official `a2a-sdk` does the wire format: its JSON-RPC dispatcher accepts the v1.0
method names (``SendMessage``, ``SendStreamingMessage``, ``GetTask``, ``CancelTask``...)
and, through its v0.3 adapter, ``message/send``, ``message/stream``, ``tasks/get`` and
``tasks/cancel``. Corral supplies the `RequestHandler`: an A2A task is an agent run, its
``contextId`` is the session. Cards: ``/a2a/{name}/.well-known/agent-card.json`` per
agent, and ``/.well-known/agent-card.json`` for the first public agent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.agents.events import RunFinished, TextOutput
from corral.agents.messages import message_from_json
from corral.agents.service import AgentService, RunConflict, RunNotFound
from corral.agents.sessions import SessionConflict
from corral.agents.spec import Agent
from corral.gateway.agent_runtime import AgentRuntime
from corral.gateway.call import exchange_of
from corral.gateway.errors import ApiError
from corral.gateway.pipeline import CallPipeline
from corral.llm.types import Message as ChatMessage
from corral.store import RunRecord

STATES = {
    "queued": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "input-required": TaskState.TASK_STATE_INPUT_REQUIRED,
    "succeeded": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "cancelled": TaskState.TASK_STATE_CANCELED,
}


def agent_message(text: str, task_id: str, context_id: str) -> Message:
    return Message(role=Role.ROLE_AGENT, message_id=uuid.uuid4().hex, task_id=task_id, context_id=context_id,
                   parts=[Part(text=text)])


def task_from_run(record: RunRecord) -> Task:
    output = record.output.get("output") if isinstance(record.output, dict) else None
    text = output if isinstance(output, str) else (None if output is None else _json(output))
    context_id = record.session_id or record.id
    status = TaskStatus(state=STATES.get(record.state, TaskState.TASK_STATE_UNSPECIFIED))
    if record.error:
        status.message.CopyFrom(agent_message(record.error, record.id, context_id))
    elif record.state == "input-required":
        names = ", ".join(c["name"] for c in record.input.get("pending_approvals", []))
        status.message.CopyFrom(agent_message(f"waiting for approval of: {names}", record.id, context_id))
    task = Task(id=record.id, context_id=context_id, status=status)
    if text is not None:
        task.artifacts.append(Artifact(artifact_id=f"{record.id}-output", name="output", parts=[Part(text=text)]))
    task.history.extend(_history(record, context_id, text))
    return task


def _history(record: RunRecord, context_id: str, answer: str | None) -> list[Message]:
    """The messages of the task: what the caller sent, then the agent's answer once there is one."""
    history: list[Message] = []
    for raw in record.input.get("messages", []):
        message = message_from_json(raw)
        if message.role == "user" and message.text_content:
            history.append(Message(role=Role.ROLE_USER, message_id=f"{record.id}-in-{len(history)}",
                                   task_id=record.id, context_id=context_id, parts=[Part(text=message.text_content)]))
    if answer is not None:
        history.append(agent_message(answer, record.id, context_id))
    return history


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


class CallerContextBuilder(DefaultServerCallContextBuilder):
    """Hands the handler the admitted call (who its runs are charged to, its request id)
    in the SDK's own context object."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[CALL_STATE] = exchange_of(request).call
        return context


CALL_STATE = "corral_call"  # the key of the admitted `Call` in the SDK's ServerCallContext.state


class AgentRequestHandler(RequestHandler):
    def __init__(self, runtime: AgentRuntime, agent: Agent) -> None:
        self.runtime = runtime
        self.agent = agent

    @property
    def service(self) -> AgentService:
        return self.runtime.service

    async def _start(self, params: SendMessageRequest, context: ServerCallContext,
                     *, background: bool) -> tuple[RunRecord, Any, str]:
        text = "".join(p.text for p in params.message.parts if p.HasField("text"))
        if not text:
            raise InvalidParamsError(message="the message has no text part")
        context_id = params.message.context_id or f"ctx-{uuid.uuid4().hex}"
        call = context.state.get(CALL_STATE)
        try:
            record, live = await self.service.start_run(
                self.agent.name, [ChatMessage.text("user", text)], session_id=context_id,
                mode="background" if background else "foreground",
                caller=call.caller() if call is not None else None, request_id=call.request_id if call else "",
                trace=call.trace_headers if call is not None else None)
        except SessionConflict as exc:
            raise InvalidParamsError(message=str(exc)) from None
        return record, live, context_id

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        background = params.configuration.return_immediately
        record, live, _ = await self._start(params, context, background=background)
        if live is not None:
            record = await self.service.wait(record.id, self.agent.config.timeout + 10)
        return task_from_run(record)

    async def on_message_send_stream(self, params: SendMessageRequest,
                                     context: ServerCallContext) -> AsyncGenerator[Any]:
        record, live, context_id = await self._start(params, context, background=False)
        yield Task(id=record.id, context_id=context_id, status=TaskStatus(state=TaskState.TASK_STATE_WORKING),
                   history=[params.message])
        artifact_id = f"{record.id}-output"
        first = True
        try:
            async for event in live.follow():
                if isinstance(event, TextOutput):
                    yield TaskArtifactUpdateEvent(
                        task_id=record.id, context_id=context_id, append=not first,
                        artifact=Artifact(artifact_id=artifact_id, name="output", parts=[Part(text=event.text)]))
                    first = False
                elif isinstance(event, RunFinished):
                    if not first:  # the output artifact is complete
                        yield TaskArtifactUpdateEvent(
                            task_id=record.id, context_id=context_id, append=True, last_chunk=True,
                            artifact=Artifact(artifact_id=artifact_id, name="output", parts=[Part(text="")]))
                    final = await self.service.wait(record.id, 10)
                    yield TaskStatusUpdateEvent(task_id=record.id, context_id=context_id,
                                                status=task_from_run(final).status)
        finally:
            if live.finished is None and live.task is not None:
                live.task.cancel()

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        try:
            record = await self.service.get(params.id)
        except RunNotFound:
            raise TaskNotFoundError from None
        if record.agent != self.agent.name:
            raise TaskNotFoundError
        return task_from_run(record)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        await self.on_get_task(GetTaskRequest(id=params.id), context)
        try:
            return task_from_run(await self.service.cancel(params.id))
        except RunConflict as exc:
            raise TaskNotCancelableError(message=str(exc)) from None

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        size = params.page_size or 50
        records = await self.service.store.runs.list(session_id=params.context_id or None, limit=size)
        tasks = [task_from_run(r) for r in records if r.agent == self.agent.name]
        return ListTasksResponse(tasks=tasks, page_size=size, total_size=len(tasks))

    async def on_create_task_push_notification_config(self, params: Any, context: ServerCallContext) -> Any:
        raise PushNotificationNotSupportedError(message="push notifications are not supported")

    async def on_get_task_push_notification_config(self, params: Any, context: ServerCallContext) -> Any:
        raise PushNotificationNotSupportedError(message="push notifications are not supported")

    async def on_list_task_push_notification_configs(self, params: Any, context: ServerCallContext) -> Any:
        raise PushNotificationNotSupportedError(message="push notifications are not supported")

    async def on_delete_task_push_notification_config(self, params: Any, context: ServerCallContext) -> None:
        raise PushNotificationNotSupportedError(message="push notifications are not supported")

    async def on_subscribe_to_task(self, params: Any, context: ServerCallContext) -> AsyncGenerator[Any]:
        raise UnsupportedOperationError(message="resubscribing is not supported; use tasks/get")
        yield

    async def on_get_extended_agent_card(self, params: Any, context: ServerCallContext) -> AgentCard:
        raise UnsupportedOperationError(message="there is no extended agent card")


def agent_card(agent: Agent, base_url: str, *, auth_required: bool = False) -> AgentCard:
    """The agent's card; with auth on it declares the bearer scheme every call needs."""
    url = f"{base_url.rstrip('/')}/a2a/{agent.name}"
    card = AgentCard(
        name=agent.name, description=agent.config.description or f"Corral agent {agent.name}", version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
                              AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3")],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id=agent.name, name=agent.name, description=agent.config.description or agent.name,
                           tags=["corral"])],
    )
    if auth_required:
        card.security_schemes["bearer"].CopyFrom(SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(
            scheme="bearer", description="A Corral API key (or a JWT when the gateway accepts them)")))
        requirement = SecurityRequirement()
        requirement.schemes["bearer"].CopyFrom(StringList())
        card.security_requirements.append(requirement)
    return card


class A2AApi:
    """Each public agent's JSON-RPC endpoint and agent card."""

    def __init__(self, runtime: AgentRuntime, pipeline: CallPipeline, *, auth_required: bool) -> None:
        self.runtime = runtime
        self.pipeline = pipeline
        self.auth_required = auth_required
        self.public = runtime.registry.public()
        self.dispatchers = {a.name: JsonRpcDispatcher(AgentRequestHandler(runtime, a),
                                                      context_builder=CallerContextBuilder(), enable_v0_3_compat=True)
                            for a in self.public}

    async def rpc(self, request: Request) -> Response:
        name = request.path_params["name"]
        dispatcher = self.dispatchers.get(name)
        if dispatcher is None:
            await self.pipeline.authenticate(request)  # without a key, nothing is learnt about which agents exist
            return JSONResponse({"jsonrpc": "2.0", "id": await _request_id(request),
                                 "error": {"code": -32601, "message": f"unknown agent {name!r}"}}, status_code=404)
        call = self.pipeline.begin(request, name, "a2a")
        call.metered = True
        await self.pipeline.admit(request, call)
        return await dispatcher.handle_requests(request)

    async def card(self, request: Request) -> Response:
        name = request.path_params.get("name") or (self.public[0].name if self.public else None)
        agent = self.runtime.registry.get(name) if name else None
        if agent is None or agent.config.visibility != "public":
            raise ApiError(404, f"unknown agent {name!r}", code="not_found")
        return JSONResponse(agent_card_to_dict(agent_card(agent, str(request.base_url),
                                                          auth_required=self.auth_required)))


async def _request_id(request: Request) -> Any:
    """The JSON-RPC id of the request, to answer it even when it cannot be served."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return body.get("id") if isinstance(body, dict) else None
