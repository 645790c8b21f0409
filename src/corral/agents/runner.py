"""The agent loop: model -> tool calls -> results -> model, until a final answer.

The runner is stateless between calls: everything about a run lives in `RunState`,
so a run paused for approval (or interrupted by a restart) continues from its state.
Cancellation is asyncio cancellation of the task iterating `run`; the per-run
timeout is applied by the caller (`AgentService`), per-tool timeouts here.

With a `Tracing`, a run is an ``invoke_agent`` span with its ``chat`` and
``execute_tool`` spans under it (`corral.agents.tracing`); the trace context travels
in `RunContext.trace` and, as W3C headers, to remote agents and MCP servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.context import Context

from corral.agents.compaction import compact
from corral.agents.events import (
    ApprovalRequested,
    HandedOff,
    RunEvent,
    RunFinished,
    TextOutput,
    ToolCalled,
    ToolReturned,
    UsageReported,
)
from corral.agents.output import check_output
from corral.agents.spec import Agent, RunState
from corral.agents.tracing import AgentTrace
from corral.llm.router import CallContext
from corral.llm.types import (
    ChatRequest,
    ChatResult,
    Message,
    StreamAccumulator,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    UsageEvent,
)
from corral.telemetry.tracing import Tracing, span_context
from corral.tools.base import Tool, ToolContext, ToolError, ToolResult, Toolset

HANDOFF_PREFIX = "transfer_to_"
DENIED = "The user denied this tool call."


class Models(Protocol):
    async def complete(self, alias: str, request: ChatRequest, ctx: CallContext) -> ChatResult: ...

    def stream(self, alias: str, request: ChatRequest, ctx: CallContext) -> AsyncIterator[StreamEvent]: ...

    def context_window(self, alias: str) -> int | None: ...


# agent, text, context id, W3C trace headers for the call -> the remote agent's answer
RemoteCall = Callable[[Agent, str, str | None, Mapping[str, str]], Awaitable[str]]


@dataclass
class _Bound:
    """A tool as one agent sees it: where to call it and how."""

    spec: ToolSpec
    requires_approval: bool = False
    timeout: float | None = None
    toolset: Toolset | None = None
    handoff: str | None = None  # target agent for transfer_to_<name>
    agent_tool: str | None = None  # agent run as a tool


@dataclass
class RunContext:
    run_id: str
    session_id: str | None = None
    request_id: str = ""
    agent: str | None = None
    caller: Mapping[str, Any] | None = None  # who the run's model calls are charged to
    trace: Context | None = None  # the parent span of this run's spans (traces only)
    conversation_id: str | None = None  # the session a sub-agent's run serves (traces only)
    user: str | None = None  # who started the run (traces only)

    def call_context(self, agent: str = "") -> CallContext:
        """A model call's context; ``agent``: the agent making it (after a hand-off, not the
        run's first), so metering and traces name the right one."""
        return CallContext(request_id=self.request_id, run_id=self.run_id, agent=agent or self.agent,
                           caller=self.caller, trace=self.trace)


class Runner:
    def __init__(self, agents: Mapping[str, Agent], models: Models, *, remote: RemoteCall | None = None,
                 default_tool_timeout: float = 30.0, tracing: Tracing | None = None) -> None:
        self.agents = agents
        self.models = models
        self.remote = remote
        self.default_tool_timeout = default_tool_timeout
        self.tracing = tracing

    async def run(self, state: RunState, ctx: RunContext, *, root: bool = True) -> AsyncIterator[RunEvent]:
        if self.tracing is None:
            async for event in self._loop(state, ctx, None):
                yield event
            return
        trace = AgentTrace(self.tracing, self.agents[state.agent], state, parent=ctx.trace, run_id=ctx.run_id,
                           conversation_id=ctx.session_id or ctx.conversation_id, root=root, user=ctx.user)
        error: BaseException | None = None
        try:
            async for event in self._loop(state, ctx, trace):
                trace.observe(event, self.agents)
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            trace.end(error)

    async def _loop(self, state: RunState, outer: RunContext, trace: AgentTrace | None) -> AsyncIterator[RunEvent]:
        while True:
            # Model and tool calls are children of the current agent's span (it changes on a hand-off).
            ctx = outer if trace is None else dataclasses.replace(outer, trace=trace.context)
            agent = self.agents[state.agent]
            if agent.is_remote:
                async for event in self._delegate(agent, state, ctx):
                    yield event
                return
            tools = await self._tools(agent)
            pending = state.pending_calls()
            if pending:
                waiting = [c for c in pending if _needs(tools, c) and c.id not in state.decisions]
                if waiting:
                    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in waiting]
                    yield ApprovalRequested(calls, agent=agent.name)
                    yield RunFinished("input-required", usage=state.usage)
                    return
                async for event in self._execute(agent, tools, pending, state, ctx, trace):
                    yield event
                continue
            if state.iterations >= agent.config.max_iterations:
                yield RunFinished("failed", error=f"max_iterations ({agent.config.max_iterations}) reached "
                                                  "without a final answer", usage=state.usage)
                return
            async for event in compact(agent, state, self.models, ctx.call_context(agent.name)):
                yield event
            result = None
            async for item in self._model_turn(agent, tools, state, ctx):
                if isinstance(item, ChatResult):
                    result = item
                else:
                    yield item
            assert result is not None
            if result.message.tool_calls:
                continue
            finished = self._finish(agent, state, result.message.text_content)
            if finished is not None:
                yield finished
                return

    def _finish(self, agent: Agent, state: RunState, text: str) -> RunFinished | None:
        schema = agent.config.output_schema
        if schema is None:
            return RunFinished("completed", output=text, usage=state.usage)
        parsed, problem = check_output(text, schema)
        if problem is None:
            return RunFinished("completed", output=parsed, usage=state.usage)
        if state.output_retries >= agent.config.output_retries:
            return RunFinished("failed", error=f"the answer did not match the output schema after "
                                               f"{state.output_retries} retries: {problem}", usage=state.usage)
        state.output_retries += 1
        state.messages.append(Message.text("user", f"Your answer did not match the required JSON schema: {problem}. "
                                                   "Reply again with only a JSON value that matches the schema."))
        return None

    async def _model_turn(self, agent: Agent, tools: dict[str, _Bound], state: RunState,
                          ctx: RunContext) -> AsyncIterator[RunEvent | ChatResult]:
        request = self._request(agent, tools, state)
        state.iterations += 1
        accumulator = StreamAccumulator(agent.model)
        async for event in self.models.stream(agent.model, request, ctx.call_context(agent.name)):
            accumulator.add(event)
            if isinstance(event, TextDelta) and event.text:
                yield TextOutput(event.text, agent=agent.name)
            elif isinstance(event, UsageEvent):
                state.usage = state.usage + event.usage
                yield UsageReported(event.usage)
        result = accumulator.result()
        message = result.message
        message.reasoning = None
        for index, call in enumerate(message.tool_calls):
            call.id = call.id or f"call_{state.iterations}_{index}"
        state.messages.append(message)
        for call in message.tool_calls:
            yield ToolCalled(call.id, call.name, call.arguments, agent=agent.name)
        yield result

    def _request(self, agent: Agent, tools: dict[str, _Bound], state: RunState) -> ChatRequest:
        system = agent.system_prompt(state.variables)
        messages = ([Message.text("system", system)] if system else []) + list(state.messages)
        params = dict(agent.config.params)
        request = ChatRequest(model=agent.model, messages=messages, tools=[b.spec for b in tools.values()],
                              temperature=params.pop("temperature", None), top_p=params.pop("top_p", None),
                              max_tokens=params.pop("max_tokens", None), extra=params)
        if agent.config.output_schema is not None:
            request.response_format = {"type": "json_schema", "json_schema": {
                "name": agent.name.replace("-", "_"), "schema": agent.config.output_schema}}
        return request

    async def _tools(self, agent: Agent) -> dict[str, _Bound]:
        bound: dict[str, _Bound] = {}
        approval = set(agent.config.require_approval)
        for toolset in agent.toolsets:
            for tool in await toolset.list_tools():
                bound[tool.name] = self._bind(agent, tool, toolset, approval)
        for target in agent.config.sub_agents:
            other = self.agents[target]
            spec = ToolSpec(f"{HANDOFF_PREFIX}{target}", f"Hand the conversation over to {target}. "
                            f"{other.config.description}".strip(), {"type": "object", "properties": {}})
            bound[spec.name] = _Bound(spec, spec.name in approval, handoff=target)
        for target in agent.config.agent_tools:
            other = self.agents[target]
            spec = ToolSpec(target, other.config.description or f"Ask the agent {target}.",
                            {"type": "object", "required": ["input"], "properties": {"input": {"type": "string"}}})
            bound[target] = _Bound(spec, target in approval, timeout=other.config.timeout, agent_tool=target)
        return bound

    def _bind(self, agent: Agent, tool: Tool, toolset: Toolset, approval: set[str]) -> _Bound:
        timeout = agent.config.tool_timeout or tool.timeout
        return _Bound(tool.spec, tool.requires_approval or tool.name in approval, timeout, toolset)

    async def _execute(self, agent: Agent, tools: dict[str, _Bound], calls: list[ToolCall], state: RunState,
                       ctx: RunContext, trace: AgentTrace | None) -> AsyncIterator[RunEvent]:
        results = await asyncio.gather(*(self._traced_call(agent, tools, c, state, ctx, trace) for c in calls))
        handoff: str | None = None
        for call, result in zip(calls, results, strict=True):
            state.messages.append(Message.text("tool", result.content, tool_call_id=call.id, name=call.name))
            yield ToolReturned(call.id, call.name, result.content, result.is_error, agent=agent.name)
            bound = tools.get(call.name)
            if bound is not None and bound.handoff and not result.is_error and handoff is None:
                handoff = bound.handoff
        for call in calls:
            state.decisions.pop(call.id, None)
        if handoff is not None:
            state.agent = handoff
            yield HandedOff(agent.name, handoff)

    async def _traced_call(self, agent: Agent, tools: dict[str, _Bound], call: ToolCall, state: RunState,
                           ctx: RunContext, trace: AgentTrace | None) -> ToolResult:
        if trace is None:
            return await self._call(agent, tools, call, state, ctx)
        bound = tools.get(call.name)
        toolset = bound.toolset.name if bound is not None and bound.toolset is not None else None
        span = trace.tool(call.name, call.id, toolset=toolset, arguments=call.arguments,
                          description=bound.spec.description if bound is not None else "")
        result = ToolResult.error("cancelled")
        try:
            result = await self._call(agent, tools, call, state, dataclasses.replace(ctx, trace=span_context(span)))
        finally:
            trace.tool_done(span, result.content, result.is_error)
        return result

    async def _call(self, agent: Agent, tools: dict[str, _Bound], call: ToolCall, state: RunState,
                    ctx: RunContext) -> ToolResult:
        bound = tools.get(call.name)
        if bound is None:
            return ToolResult.error(f"Unknown tool {call.name!r}. Available: {', '.join(sorted(tools)) or 'none'}")
        if bound.requires_approval and not state.decisions.get(call.id, False):
            return ToolResult.error(DENIED)
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            return ToolResult.error(f"The arguments are not valid JSON: {exc}")
        if not isinstance(arguments, dict):
            return ToolResult.error("The arguments must be a JSON object.")
        timeout = bound.timeout or self.default_tool_timeout
        tool_ctx = ToolContext(run_id=ctx.run_id, agent=agent.name, session_id=ctx.session_id, tool_call_id=call.id,
                               trace=self._carrier(ctx))
        try:
            return await asyncio.wait_for(self._invoke(bound, arguments, tool_ctx, state, ctx), timeout)
        except TimeoutError:
            return ToolResult.error(f"The tool {call.name!r} timed out after {timeout:g}s.")
        except ToolError as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:  # a tool bug must not end the run: the model sees it and may recover
            return ToolResult.error(f"The tool {call.name!r} failed: {type(exc).__name__}: {exc}")

    async def _invoke(self, bound: _Bound, arguments: dict[str, Any], tool_ctx: ToolContext, state: RunState,
                      ctx: RunContext) -> ToolResult:
        if bound.handoff is not None:
            return ToolResult(f"Transferred to {bound.handoff}.")
        if bound.agent_tool is not None:
            return await self._agent_tool(bound.agent_tool, str(arguments.get("input", "")), state, ctx)
        assert bound.toolset is not None
        return await bound.toolset.call(bound.spec.name, arguments, tool_ctx)

    async def _agent_tool(self, name: str, text: str, parent: RunState, ctx: RunContext) -> ToolResult:
        target = self.agents[name]
        if target.is_remote:
            if self.remote is None:
                raise ToolError(f"remote agent {name!r} is not reachable: no A2A client")
            return ToolResult(await self.remote(target, text, None, self._carrier(ctx)))
        state = RunState(agent=name, messages=[Message.text("user", text)], variables=dict(parent.variables))
        final: RunFinished | None = None
        sub = RunContext(ctx.run_id, None, ctx.request_id, agent=name, caller=ctx.caller, trace=ctx.trace,
                         conversation_id=ctx.session_id or ctx.conversation_id)
        async for event in self.run(state, sub, root=False):
            if isinstance(event, RunFinished):
                final = event
        parent.usage = parent.usage + state.usage
        if final is None or final.status != "completed":
            reason = final.error if final and final.error else (final.status if final else "no answer")
            raise ToolError(f"agent {name!r} did not answer: {reason}")
        output = final.output
        return ToolResult(output if isinstance(output, str) else json.dumps(output))

    async def _delegate(self, agent: Agent, state: RunState, ctx: RunContext) -> AsyncIterator[RunEvent]:
        """A hand-off to a remote A2A agent: it answers the latest user message."""
        if self.remote is None:
            yield RunFinished("failed", error=f"remote agent {agent.name!r} is not reachable", usage=state.usage)
            return
        text = next((m.text_content for m in reversed(state.messages) if m.role == "user"), "")
        try:
            answer = await self.remote(agent, text, ctx.session_id, self._carrier(ctx))
        except Exception as exc:
            yield RunFinished("failed", error=f"remote agent {agent.name!r} failed: {exc}", usage=state.usage)
            return
        state.messages.append(Message.text("assistant", answer))
        yield TextOutput(answer, agent=agent.name)
        yield RunFinished("completed", output=answer, usage=state.usage)


    def _carrier(self, ctx: RunContext) -> dict[str, str]:
        """W3C trace headers for a call that leaves the process (empty without tracing)."""
        if self.tracing is None or ctx.trace is None:
            return {}
        return self.tracing.carrier(ctx.trace)


def _needs(tools: dict[str, _Bound], call: ToolCall) -> bool:
    bound = tools.get(call.name)
    return bound is not None and bound.requires_approval
