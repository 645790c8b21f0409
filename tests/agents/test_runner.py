"""The agent loop, driven by the scripted model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from corral.agents.events import ApprovalRequested, Compacted, HandedOff, ToolCalled, ToolReturned
from corral.agents.spec import RunState
from corral.config.schema import ScriptStep
from corral.llm.types import Message, ToolSpec
from corral.tools.base import FunctionToolset, ToolContext, ToolResult
from corral.tools.builtin import time_toolset


def slow_and_fast_tools(log: list[str]) -> FunctionToolset:
    async def slow(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        log.append("slow start")
        await asyncio.sleep(float(arguments.get("seconds", 0.2)))
        log.append("slow end")
        return ToolResult("slow done")

    async def fast(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        log.append("fast")
        return ToolResult("fast done")

    async def broken(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        raise RuntimeError("disk on fire")

    return FunctionToolset("work", {"slow": (ToolSpec("slow"), slow), "fast": (ToolSpec("fast"), fast),
                                    "broken": (ToolSpec("broken"), broken)})


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


async def test_parallel_tool_calls_run_concurrently_and_results_keep_call_order(harness) -> None:
    log: list[str] = []
    h = harness([ScriptStep(tool_calls=[call("slow", seconds=0.2), call("fast")]), ScriptStep(text="done")],
                {"assistant": {"model": "scripted", "tools": ["work"]}}, toolsets={"work": slow_and_fast_tools(log)})
    events, state = await h.run("go")
    assert h.final(events).output == "done"
    assert log == ["slow start", "fast", "slow end"]  # fast ran while slow was sleeping
    results = [e for e in events if isinstance(e, ToolReturned)]
    assert [(r.name, r.content) for r in results] == [("slow", "slow done"), ("fast", "fast done")]
    assert [m.role for m in state.messages] == ["user", "assistant", "tool", "tool", "assistant"]


async def test_tool_errors_and_unknown_tools_go_back_to_the_model(harness) -> None:
    h = harness([ScriptStep(tool_calls=[call("broken"), call("nope")]), ScriptStep(text="recovered")],
                {"assistant": {"model": "scripted", "tools": ["work"]}}, toolsets={"work": slow_and_fast_tools([])})
    events, _ = await h.run("go")
    results = {e.name: e for e in events if isinstance(e, ToolReturned)}
    assert results["broken"].is_error and "RuntimeError: disk on fire" in results["broken"].content
    assert results["nope"].is_error and "Unknown tool 'nope'" in results["nope"].content
    assert h.final(events).output == "recovered"
    sent = h.provider.requests[1].messages
    assert "disk on fire" in sent[-2].text_content


async def test_per_tool_timeout_is_reported_to_the_model(harness) -> None:
    h = harness([ScriptStep(tool_calls=[call("slow", seconds=5)]), ScriptStep(text="ok")],
                {"assistant": {"model": "scripted", "tools": ["work"], "tool_timeout": 0.1}},
                toolsets={"work": slow_and_fast_tools([])})
    events, _ = await h.run("go")
    result = next(e for e in events if isinstance(e, ToolReturned))
    assert result.is_error and result.content == "The tool 'slow' timed out after 0.1s."


async def test_max_iterations_fails_the_run_with_the_reason(harness) -> None:
    loop = [ScriptStep(tool_calls=[call("current_time")])] * 3
    h = harness(loop, {"assistant": {"model": "scripted", "tools": ["time"], "max_iterations": 2}})
    events, _ = await h.run("loop")
    final = h.final(events)
    assert final.status == "failed" and final.error is not None and "max_iterations (2)" in final.error
    assert len(h.provider.requests) == 2


async def test_handoff_switches_agent_instructions_and_tools(harness) -> None:
    h = harness([ScriptStep(tool_calls=[call("transfer_to_billing")]), ScriptStep(text="Billing here.")],
                {"assistant": {"model": "scripted", "sub_agents": ["billing"], "instructions": "triage"},
                 "billing": {"model": "scripted", "instructions": "You do billing.", "tools": ["time"]}})
    events, state = await h.run("my invoice")
    assert next(e for e in events if isinstance(e, HandedOff)).target == "billing"
    assert [t.name for t in h.provider.requests[0].tools] == ["transfer_to_billing"]
    second = h.provider.requests[1]
    assert second.messages[0].text_content == "You do billing."
    assert [t.name for t in second.tools] == ["current_time"]
    assert state.agent == "billing" and h.final(events).output == "Billing here."


async def test_agent_as_tool_runs_the_other_agent_and_returns_its_answer(harness) -> None:
    h = harness([ScriptStep(tool_calls=[call("researcher", input="find x")]), ScriptStep(text="x is 42"),
                 ScriptStep(text="The researcher says 42.")],
                {"assistant": {"model": "scripted", "agent_tools": ["researcher"]},
                 "researcher": {"model": "scripted", "description": "Finds facts.", "visibility": "internal"}})
    events, _ = await h.run("what is x?")
    result = next(e for e in events if isinstance(e, ToolReturned))
    assert result.content == "x is 42"
    assert h.provider.requests[1].messages[-1].text_content == "find x"
    assert h.final(events).output == "The researcher says 42."


async def test_structured_output_is_validated_and_retried_then_parsed(harness) -> None:
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}
    h = harness([ScriptStep(text="forty two"), ScriptStep(text='{"answer": "42"}'),
                 ScriptStep(text='```json\n{"answer": 42}\n```')],
                {"assistant": {"model": "scripted", "output_schema": schema, "output_retries": 2}})
    events, _ = await h.run("answer")
    final = h.final(events)
    assert final.status == "completed" and final.output == {"answer": 42}
    assert h.provider.requests[0].response_format["json_schema"]["schema"] == schema
    retry = h.provider.requests[2].messages[-1].text_content
    assert "answer: '42' is not of type 'integer'" in retry


async def test_structured_output_retries_are_bounded(harness) -> None:
    schema = {"type": "object"}
    h = harness([ScriptStep(text="no")] * 5, {"assistant": {"model": "scripted", "output_schema": schema,
                                                            "output_retries": 1}})
    events, _ = await h.run("answer")
    final = h.final(events)
    assert final.status == "failed" and "after 1 retries" in (final.error or "")
    assert len(h.provider.requests) == 2


async def test_approval_pauses_then_resumes_with_the_decision(harness) -> None:
    h = harness([ScriptStep(tool_calls=[call("current_time"), call("fast")]), ScriptStep(text="all done")],
                {"assistant": {"model": "scripted", "tools": ["time", "work"], "require_approval": ["current_time"]}},
                toolsets={"work": slow_and_fast_tools([]), "time": time_toolset()})
    events, state = await h.run("time please")
    asked = next(e for e in events if isinstance(e, ApprovalRequested))
    assert [c["name"] for c in asked.calls] == ["current_time"]
    assert h.final(events).status == "input-required"
    assert not any(isinstance(e, ToolReturned) for e in events)  # nothing ran before the decision

    restored = type(state).from_json(json.loads(json.dumps(state.to_json())))  # as after a restart
    restored.decisions[asked.calls[0]["id"]] = False
    events, state = await h.run(state=restored)
    results = {e.name: e.content for e in events if isinstance(e, ToolReturned)}
    assert results == {"current_time": "The user denied this tool call.", "fast": "fast done"}
    assert h.final(events).output == "all done"


async def test_compaction_summarises_old_turns_near_the_context_window(harness) -> None:
    h = harness([ScriptStep(text="SUMMARY: user likes tea"), ScriptStep(text="You like tea.")],
                {"assistant": {"model": "scripted", "compaction": {"keep_recent": 2, "threshold": 0.5}}},
                context_window=200)
    history = []
    for i in range(6):
        history += [Message.text("user", f"message {i} " + "tea " * 30), Message.text("assistant", f"reply {i}")]
    state = RunState("assistant", [*history, Message.text("user", "what do I like?")], base=len(history))
    events, state = await h.run(state=state)
    compacted = next(e for e in events if isinstance(e, Compacted))
    assert compacted.summarized_messages == 11 and compacted.kept_messages == 2
    assert compacted.tokens_after < compacted.tokens_before
    summary_request = h.provider.requests[0]
    assert "message 0" in summary_request.messages[1].text_content
    sent = h.provider.requests[1].messages
    assert sent[0].text_content.startswith("[Summary of the earlier conversation]\nSUMMARY: user likes tea")
    assert [m.text_content for m in sent[1:]] == ["reply 5", "what do I like?"]
    assert state.compacted and h.final(events).output == "You like tea."


async def test_tool_calls_are_reported_before_results(harness) -> None:
    h = harness([ScriptStep(tool_calls=[call("current_time", timezone="Europe/Paris")]), ScriptStep(text="ok")],
                {"assistant": {"model": "scripted", "tools": ["time"]}})
    events, _ = await h.run("time")
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCalled") < kinds.index("ToolReturned")
    called = next(e for e in events if isinstance(e, ToolCalled))
    assert json.loads(called.arguments) == {"timezone": "Europe/Paris"}
    returned = next(e for e in events if isinstance(e, ToolReturned))
    assert json.loads(returned.content)["timezone"] == "Europe/Paris"


async def test_instructions_template_reads_session_variables(harness) -> None:
    h = harness([ScriptStep(text="hi")], {"assistant": {
        "model": "scripted", "instructions": "Help {session.user} in {session.lang?}. Unset: [{session.nope}]"}})
    state = RunState("assistant", [Message.text("user", "x")], variables={"user": "Ada", "lang": "French"})
    await h.run(state=state)
    assert h.provider.requests[0].messages[0].text_content == "Help Ada in French. Unset: []"
