"""The spans of an agent run (OpenTelemetry GenAI conventions): ``invoke_agent`` for the
run, one more for each agent it hands off to, and ``execute_tool`` per tool call.

A run's model calls become ``chat`` spans in the router, under the agent span that
made them (`AgentTrace.context` is their parent); an agent used as a tool runs under
its ``execute_tool`` span. Every span of a run carries the session as
``gen_ai.conversation.id``, and the run's root span carries it for Langfuse too
(``langfuse.session.id``, ``session.id``) so its sessions view groups the runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from corral.agents.events import HandedOff, RunEvent, RunFinished
from corral.agents.spec import Agent, RunState
from corral.llm.tracing import message_json
from corral.telemetry.tracing import Tracing, fail, span_context


class AgentTrace:
    """The spans of one run (or of one sub-agent run inside it)."""

    def __init__(self, tracing: Tracing, agent: Agent, state: RunState, *, parent: Context | None,
                 run_id: str, conversation_id: str | None, root: bool, user: str | None = None) -> None:
        self.tracing = tracing
        self.conversation_id = conversation_id
        self.run_id = run_id
        self.state = state
        attributes: dict[str, Any] = {"corral.run_id": run_id}
        if root and conversation_id:
            attributes["langfuse.session.id"] = attributes["session.id"] = conversation_id
        if root and user:
            attributes["langfuse.user.id"] = attributes["user.id"] = user
        self.root = self._agent_span(agent, parent, attributes)
        self.current = self.root
        if self.root.is_recording() and tracing.capture_content:
            new = state.messages[state.base:]
            self.root.set_attribute("gen_ai.input.messages", tracing.content([message_json(m) for m in new]))
        self._finished: RunFinished | None = None

    def _agent_span(self, agent: Agent, parent: Context | None, extra: dict[str, Any]) -> Span:
        attributes: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent.name,
                                      **extra}
        if agent.config.description:
            attributes["gen_ai.agent.description"] = agent.config.description
        if self.conversation_id:
            attributes["gen_ai.conversation.id"] = self.conversation_id
        if agent.is_remote:
            kind = SpanKind.CLIENT  # the agent runs elsewhere (A2A): the span is our call to it
            if agent.config.url:
                attributes["server.address"] = agent.config.url
        else:
            kind = SpanKind.INTERNAL
            attributes["gen_ai.request.model"] = agent.model
        return self.tracing.start(f"invoke_agent {agent.name}", parent=parent, kind=kind, attributes=attributes)

    @property
    def context(self) -> Context:
        """The parent of the current agent's model calls and tool calls."""
        return span_context(self.current)

    def observe(self, event: RunEvent, agents: Mapping[str, Agent]) -> None:
        if isinstance(event, HandedOff):
            # The target takes over the run: its own span, beside the source's, under the run's.
            if self.current is not self.root:
                self.current.end()
            self.root.add_event("corral.handoff", {"corral.from": event.source, "corral.to": event.target})
            self.current = self._agent_span(agents[event.target], span_context(self.root),
                                            {"corral.run_id": self.run_id})
        elif isinstance(event, RunFinished):
            self._finished = event

    def tool(self, name: str, call_id: str, *, toolset: str | None, arguments: str, parent: Context | None = None,
             description: str = "") -> Span:
        attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                      "gen_ai.tool.call.id": call_id, "gen_ai.tool.type": "function"}
        if toolset:
            attributes["corral.toolset"] = toolset  # an MCP server's configured name, for MCP tools
        if description:
            attributes["gen_ai.tool.description"] = description
        if self.conversation_id:
            attributes["gen_ai.conversation.id"] = self.conversation_id
        span = self.tracing.start(f"execute_tool {name}", parent=parent or self.context, attributes=attributes)
        if span.is_recording() and self.tracing.capture_content:
            span.set_attribute("gen_ai.tool.call.arguments", self.tracing.content(arguments))
        return span

    def tool_done(self, span: Span, content: str, is_error: bool) -> None:
        if span.is_recording():
            if self.tracing.capture_content:
                span.set_attribute("gen_ai.tool.call.result", self.tracing.content(content))
            if is_error:
                fail(span, "tool_error", self.tracing.content(content[:500]))
        span.end()

    def end(self, error: BaseException | None = None) -> None:
        finished = self._finished
        for span in dict.fromkeys((self.current, self.root)):
            if span.is_recording():
                if span is self.root:  # the run's total (a hand-off segment's share is in its chat spans)
                    usage = self.state.usage
                    span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                if finished is not None:
                    span.set_attribute("corral.run.status", finished.status)
                    if finished.status == "failed":
                        fail(span, "run_failed", self.tracing.content(finished.error or "failed"))
                elif error is not None:
                    fail(span, type(error).__qualname__)
                if span is self.root and finished is not None and finished.output is not None \
                        and self.tracing.capture_content:
                    span.set_attribute("gen_ai.output.messages", self.tracing.content(
                        [{"role": "assistant", "parts": [{"type": "text", "content": finished.output}]}]))
            span.end()
