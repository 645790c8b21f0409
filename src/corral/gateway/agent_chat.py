"""Agents as chat models: ``model: "<agent>"`` on the OpenAI, Anthropic and Responses
surfaces. The run's final text streams as text deltas; tool steps are not shown there
(the REST and A2A surfaces show them). The run is charged per model call to the
caller of the chat request, and continues the session named by ``x-corral-session-id``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from corral.agents.events import RunFinished, TextOutput, UsageReported
from corral.agents.sessions import SessionConflict
from corral.gateway.agent_runtime import AgentRuntime
from corral.gateway.call import Call, ChatTarget, owner_of
from corral.llm.errors import ProviderError
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


class AgentRunError(ProviderError):
    status = 500
    code = "agent_run_failed"


class AgentTarget:
    def __init__(self, runtime: AgentRuntime, name: str) -> None:
        self.runtime = runtime
        self.name = name

    async def complete(self, request: ChatRequest, call: Call) -> ChatResult:
        accumulator = StreamAccumulator(self.name)
        async for event in self.stream(request, call):
            accumulator.add(event)
        return accumulator.result()

    async def stream(self, request: ChatRequest, call: Call) -> AsyncIterator[StreamEvent]:
        session_id = call.session_id
        messages = chat_input(request.messages, continuing=session_id is not None)
        call.metered = True  # the run's model calls are charged one by one
        try:
            _, live = await self.runtime.service.start_run(
                self.name, messages, session_id=session_id, owner=owner_of(call.principal) if session_id else None,
                request_id=call.request_id, caller=call.caller(), trace=call.trace_headers)
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


class AgentChatTargets:
    """The public agents, as `corral.gateway.call.AgentTargets` for model resolution."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    def target(self, name: str) -> ChatTarget | None:
        agent = self.runtime.registry.get(name)
        return AgentTarget(self.runtime, name) if agent is not None and agent.config.visibility == "public" else None

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=a.name, owned_by="corral-agent") for a in self.runtime.registry.public()]


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
