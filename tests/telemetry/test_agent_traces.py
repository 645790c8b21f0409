"""The trace of an agent run, exported over OTLP/HTTP to a loopback receiver: the span tree
of a run with an MCP tool call and a sub-agent, its GenAI attributes and session id,
content only when captured (and redacted), parent-based sampling, and Langfuse's
endpoint and auth."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.agents.registry import AgentRegistry
from corral.agents.router_models import RouterModels
from corral.agents.runner import Runner
from corral.agents.service import AgentService
from corral.config.schema import CorralConfig, ScriptStep, TracingConfig
from corral.llm.pricing import PricingTable
from corral.llm.router import Router
from corral.llm.types import Message
from corral.store import Store
from corral.telemetry.tracing import Tracing, build_tracing
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SECRET = "sk-abcdefghijklmnop1234"  # in the prompt: must never reach a span in clear
SERVER = 2  # OTLP SpanKind values
CLIENT = 3
INTERNAL = 1


class HeaderLog:
    """ASGI wrapper that keeps the trace headers of each request to the MCP server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.traceparents: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"traceparent":
                    self.traceparents.append(value.decode())
        await self.app(scope, receive, send)


@asynccontextmanager
async def mcp_server() -> AsyncIterator[tuple[str, HeaderLog]]:
    from mcp.server.mcpserver import MCPServer

    server: Any = MCPServer("lookup")

    @server.tool()
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key} is 7"

    app = HeaderLog(server.streamable_http_app())
    async with serve_app(app) as url:
        yield f"{url}/mcp", app


async def run_traced(tmp_path: Any, receiver: Any, *, capture: bool, rate: float,
                     caller: dict[str, str] | None) -> tuple[dict[str, Any], HeaderLog]:
    steps = [
        ScriptStep(tool_calls=[{"name": "lookup", "arguments": {"key": "x"}},
                               {"name": "researcher", "arguments": {"input": "find y"}}],
                   usage={"input_tokens": 20, "output_tokens": 5}),
        ScriptStep(text="y is 42", usage={"input_tokens": 7, "output_tokens": 3}),
        ScriptStep(text="x is 7 and y is 42", usage={"input_tokens": 30, "output_tokens": 8}),
    ]
    tracing = build_tracing(TracingConfig(enabled=True, endpoint=receiver.url, capture_content=capture,
                                          sampling_rate=rate, service_name="corral-traced"), environ={})
    assert isinstance(tracing, Tracing)
    async with mcp_server() as (mcp_url, headers):
        config = CorralConfig.model_validate({
            "providers": {"script": {"type": "scripted"}},
            "models": {"scripted": {"provider": "script", "model": "scripted-v1"}},
            "tools": {"lookup": {"type": "mcp", "url": mcp_url, "connect_timeout": 10}},
            "agents": {"assistant": {"model": "scripted", "tools": ["lookup"], "agent_tools": ["researcher"],
                                     "instructions": "Answer briefly."},
                       "researcher": {"model": "scripted", "description": "Finds facts."}},
        })
        provider = ScriptedProvider.from_steps("script", steps, echo=False)
        router = Router(config.models, {"script": provider}, tracing=tracing, pricing=PricingTable())
        registry = AgentRegistry.from_config(config)
        runner = Runner(registry.agents, RouterModels(router), tracing=tracing)
        store = await Store.open(f"sqlite:///{tmp_path / 'corral.db'}")
        service = AgentService(registry, runner, store, config.runs, tracing=tracing)
        try:
            record, live = await service.start_run("assistant", [Message.text("user", f"what are x and y? {SECRET}")],
                                                   session_id="sess-1", owner="alice", trace=caller)
            assert live is not None
            done = await service.wait(record.id, 15)
        finally:
            await service.stop()
            await registry.aclose()
            await store.aclose()
    assert done.state == "succeeded", done.error
    await anyio.to_thread.run_sync(tracing.provider.shutdown)  # flushes the batch to the receiver
    return {"run": done}, headers


async def test_a_run_is_one_trace_of_agent_chat_and_tool_spans_under_the_callers(tmp_path, otlp_receiver) -> None:
    caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    with otlp_receiver() as receiver:
        _, mcp_headers = await run_traced(tmp_path, receiver, capture=False, rate=1.0, caller=caller)
    spans = receiver.spans
    assert {s.trace_id for s in spans} == {CALLER_TRACE}
    assert sorted(s.name for s in spans) == sorted([
        "invoke_agent assistant", "chat scripted", "chat scripted", "execute_tool lookup",
        "execute_tool researcher", "invoke_agent researcher", "chat scripted", "settle_run runs"])
    root = receiver.one("invoke_agent assistant")
    tool = receiver.one("execute_tool lookup")
    agent_tool = receiver.one("execute_tool researcher")
    sub = receiver.one("invoke_agent researcher")
    chats = receiver.named("chat scripted")
    # The tree: the run under the caller's span; model and tool calls under the run;
    # the sub-agent under its tool call, its model call under it.
    assert root.parent_id == CALLER_SPAN and receiver.one("settle_run runs").parent_id == CALLER_SPAN
    assert tool.parent_id == root.span_id and agent_tool.parent_id == root.span_id
    assert sub.parent_id == agent_tool.span_id
    assert sorted(c.parent_id for c in chats) == sorted([root.span_id, root.span_id, sub.span_id])
    # The agent span: GenAI attributes, the session as conversation id, Langfuse grouping.
    assert root.kind == INTERNAL and root.service == "corral-traced"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "assistant"
    assert root.attributes["gen_ai.request.model"] == "scripted"
    for span in (root, tool, agent_tool, sub):
        assert span.attributes["gen_ai.conversation.id"] == "sess-1", span.name
    assert (root.attributes["langfuse.session.id"], root.attributes["session.id"]) == ("sess-1", "sess-1")
    assert (root.attributes["langfuse.user.id"], root.attributes["user.id"]) == ("alice", "alice")
    assert (root.attributes["gen_ai.usage.input_tokens"], root.attributes["gen_ai.usage.output_tokens"]) == (57, 16)
    assert root.attributes["corral.run.status"] == "completed"
    assert sub.attributes["gen_ai.agent.description"] == "Finds facts."
    # The chat span: request and response model, tokens, cost, finish reason, deployment.
    first = next(c for c in chats if c.attributes["gen_ai.usage.input_tokens"] == 20)
    assert first.kind == CLIENT
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "scripted"
    assert first.attributes["gen_ai.response.model"] == "scripted-v1"
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert first.attributes["gen_ai.usage.output_tokens"] == 5
    assert first.attributes["corral.deployment"] == "script/scripted-v1"
    assert first.attributes["gen_ai.usage.cost"] == 0.0  # a scripted model has no price
    # The tool span: name, call id, the MCP server it went to; and the server saw the trace.
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_1"  # the id the model gave the call
    assert tool.attributes["corral.toolset"] == "lookup"
    assert tool.status_code == 0  # unset: it worked
    assert f"00-{CALLER_TRACE}-{tool.span_id}-01" in mcp_headers.traceparents
    # Without content capture, no prompt, completion or tool payload is on any span.
    content_keys = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                    "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"}
    assert not any(content_keys & set(s.attributes) for s in spans)


async def test_content_is_captured_only_when_enabled_and_redacted(tmp_path, otlp_receiver) -> None:
    with otlp_receiver() as receiver:
        await run_traced(tmp_path, receiver, capture=True, rate=1.0, caller=None)
    root = receiver.one("invoke_agent assistant")
    assert root.parent_id == ""  # no caller: the run starts its own trace
    chats = receiver.named("chat scripted")
    first = next(c for c in chats if c.attributes["gen_ai.usage.input_tokens"] == 20)
    inputs = json.loads(first.attributes["gen_ai.input.messages"])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "what are x and y? sk-[redacted]"}]}]
    assert json.loads(first.attributes["gen_ai.system_instructions"]) == [{"type": "text",
                                                                          "content": "Answer briefly."}]
    last = next(c for c in chats if c.attributes["gen_ai.usage.input_tokens"] == 30)
    assert json.loads(last.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "x is 7 and y is 42"}], "finish_reason": "stop"}]
    tool = receiver.one("execute_tool lookup")
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"key": "x"}
    assert tool.attributes["gen_ai.tool.call.result"] == "value of x is 7"
    assert json.loads(root.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "x is 7 and y is 42"
    assert SECRET not in json.dumps([s.attributes for s in receiver.spans])


@pytest.mark.parametrize("caller_sampled", [None, "01", "00"])
async def test_sampling_at_zero_keeps_only_what_a_sampled_caller_asks_for(tmp_path, caller_sampled, otlp_receiver) -> None:
    caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{caller_sampled}"} if caller_sampled else None
    with otlp_receiver() as receiver:
        _, mcp_headers = await run_traced(tmp_path, receiver, capture=False, rate=0.0, caller=caller)
    if caller_sampled == "01":  # parent-based: the caller's decision wins over the ratio
        assert len(receiver.spans) == 8 and {s.trace_id for s in receiver.spans} == {CALLER_TRACE}
    else:
        assert receiver.spans == []
    if caller_sampled is not None:  # the trace still propagates, sampled or not
        assert any(p.startswith(f"00-{CALLER_TRACE}-") for p in mcp_headers.traceparents)


async def test_langfuse_keys_set_the_otlp_endpoint_and_basic_auth(otlp_receiver) -> None:
    with otlp_receiver() as receiver:
        environ = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-2", "LANGFUSE_HOST": receiver.url}
        tracing = build_tracing(TracingConfig(enabled=True), environ=environ)
        assert tracing is not None
        tracing.start("invoke_agent probe", parent=None).end()
        await anyio.to_thread.run_sync(tracing.provider.shutdown)
    assert receiver.paths == ["/api/public/otel/v1/traces"]
    expected = base64.b64encode(b"pk-lf-1:sk-lf-2").decode()
    assert receiver.headers[0]["authorization"] == f"Basic {expected}"
    assert [s.name for s in receiver.spans] == ["invoke_agent probe"]


def test_langfuse_needs_both_keys() -> None:
    with pytest.raises(ValueError, match="both a public and a secret key"):
        build_tracing(TracingConfig(enabled=True), environ={"LANGFUSE_PUBLIC_KEY": "pk-lf-1"})


async def test_retries_and_fallbacks_are_events_on_one_chat_span() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from corral.llm.router import CallContext
    from corral.llm.types import ChatRequest

    config = CorralConfig.model_validate({
        "providers": {"a": {"type": "scripted"}, "b": {"type": "scripted"}},
        "models": {"main": {"provider": "a", "model": "m1", "num_retries": 1, "fallbacks": ["backup"]},
                   "backup": {"provider": "b", "model": "m2"}},
    })
    exporter = InMemorySpanExporter()
    tracing = build_tracing(TracingConfig(enabled=True, exporter="none"))
    assert tracing is not None
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    a = ScriptedProvider.from_steps("a", [ScriptStep(error="unavailable"), ScriptStep(error="unavailable")])
    b = ScriptedProvider.from_steps("b", [ScriptStep(text="ok", usage={"input_tokens": 3, "output_tokens": 1})])

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    router = Router(config.models, {"a": a, "b": b}, tracing=tracing, sleep=no_sleep)
    result = await router.complete("main", ChatRequest("main", [Message.text("user", "hi")]), CallContext())
    assert result.message.text_content == "ok"
    [span] = exporter.get_finished_spans()
    assert span.name == "chat main"
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [name for name, _ in events] == ["corral.attempt_failed", "corral.attempt_failed", "corral.fallback"]
    assert events[0][1]["corral.deployment"] == "a/m1" and events[0][1]["error.type"] == "upstream_unavailable"
    assert "corral.retry_in_seconds" in events[0][1] and "corral.retry_in_seconds" not in events[1][1]
    assert events[2][1]["corral.from"] == "main" and events[2][1]["corral.to"] == ("backup",)
    attributes = dict(span.attributes or {})
    assert (attributes["corral.deployment"], attributes["corral.attempts"]) == ("b/m2", 3)
    assert attributes["gen_ai.response.model"] == "m2"
    assert attributes["gen_ai.provider.name"] == "b"


async def test_a_remote_a2a_agent_receives_the_trace_of_its_tool_call() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from corral.agents.remote import RemoteAgents
    from corral.agents.runner import RunContext
    from corral.agents.spec import RunState
    from corral.gateway.app import create_app

    far = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": {"far": {"model": "scripted", "description": "Knows numbers."}},
    })
    far_app = HeaderLog(create_app(far, providers={"script": ScriptedProvider.from_steps(
        "script", [ScriptStep(text="Far says 7.")])}))
    exporter = InMemorySpanExporter()
    tracing = build_tracing(TracingConfig(enabled=True, exporter="none"))
    assert tracing is not None
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serve_app(far_app) as far_url:
        near = CorralConfig.model_validate({
            "providers": {"script": {"type": "scripted"}},
            "models": {"scripted": {"provider": "script", "model": "scripted"}},
            "agents": {"asker": {"model": "scripted", "agent_tools": ["far"]},
                       "far": {"type": "remote", "url": f"{far_url}/a2a/far", "description": "Remote."}},
        })
        provider = ScriptedProvider.from_steps("script", [
            ScriptStep(tool_calls=[{"name": "far", "arguments": {"input": "what number?"}}]),
            ScriptStep(text="Near heard: 7.")], echo=False)
        registry = AgentRegistry.from_config(near)
        remote = RemoteAgents()
        runner = Runner(registry.agents, RouterModels(Router(near.models, {"script": provider}, tracing=tracing)),
                        remote=remote.call, tracing=tracing)
        try:
            state = RunState("asker", [Message.text("user", "ask far")])
            events = [e async for e in runner.run(state, RunContext("run_far"))]
        finally:
            await remote.aclose()
            await registry.aclose()
    assert events[-1].output == "Near heard: 7."  # type: ignore[attr-defined]
    [tool] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool far"]
    expected = f"00-{tool.context.trace_id:032x}-{tool.context.span_id:016x}-"
    assert [p[:len(expected)] for p in far_app.traceparents] == [expected]  # the call that asked far
