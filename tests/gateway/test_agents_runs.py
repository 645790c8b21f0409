"""The REST runs and sessions API over a real loopback server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


@asynccontextmanager
async def api(steps: list[ScriptStep], **agents: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": agents, "runs": {"poll_interval": 0.05, "lease_seconds": 5},
    })
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", steps, echo=False)})
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


TIME_FLOW = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="It is now.")]


async def test_wait_mode_returns_the_finished_run_with_output_and_usage() -> None:
    async with api(TIME_FLOW, assistant={"model": "scripted", "tools": ["time"]}) as client:
        response = await client.post("/v1/agents/assistant/runs", json={"input": "time?"})
        run = response.json()
        fetched = (await client.get(f"/v1/runs/{run['id']}")).json()
    assert response.status_code == 200
    assert run["state"] == "succeeded" and run["output"] == "It is now." and run["agent"] == "assistant"
    assert run["usage"]["output_tokens"] > 0
    assert fetched["state"] == "succeeded" and fetched["output"] == "It is now."


async def test_stream_mode_sends_run_events_as_sse() -> None:
    async with api(TIME_FLOW, assistant={"model": "scripted", "tools": ["time"]}) as client:
        async with client.stream("POST", "/v1/agents/assistant/runs", json={"input": "t", "mode": "stream"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run.created"
    assert kinds.index("tool.call") < kinds.index("tool.result") < kinds.index("run.finished")
    assert "".join(e["text"] for e in events if e["type"] == "text.delta") == "It is now."
    assert events[-1]["status"] == "completed" and events[-1]["output"] == "It is now."


async def poll(client: httpx.AsyncClient, run_id: str, states: set[str]) -> dict[str, Any]:
    for _ in range(200):
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["state"] in states:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run never reached {states}: {run}")


async def test_background_run_is_queued_then_claimed_by_the_worker() -> None:
    async with api(TIME_FLOW, assistant={"model": "scripted", "tools": ["time"]}) as client:
        response = await client.post("/v1/agents/assistant/runs", json={"input": "t", "mode": "background"})
        queued = response.json()
        done = await poll(client, queued["id"], {"succeeded", "failed"})
    assert response.status_code == 202 and queued["state"] == "queued"
    assert done["state"] == "succeeded" and done["output"] == "It is now." and done["attempts"] == 1


async def test_approval_pauses_the_run_until_approved_through_the_api() -> None:
    agent = {"model": "scripted", "tools": ["time"], "require_approval": ["current_time"]}
    async with api(TIME_FLOW, assistant=agent) as client:
        paused = (await client.post("/v1/agents/assistant/runs", json={"input": "t"})).json()
        call_id = paused["pending_approvals"][0]["id"]
        bad = await client.post(f"/v1/runs/{paused['id']}/approve", json={"decisions": {"nope": True}})
        approved = (await client.post(f"/v1/runs/{paused['id']}/approve",
                                      json={"decisions": {call_id: True}, "wait": True})).json()
        again = await client.post(f"/v1/runs/{paused['id']}/approve", json={})
    assert paused["state"] == "input-required"
    assert paused["pending_approvals"][0]["name"] == "current_time"
    assert bad.status_code == 409 and "nope" in bad.json()["error"]["message"]
    assert approved["state"] == "succeeded" and approved["output"] == "It is now."
    assert again.status_code == 409


async def test_denied_tool_call_is_reported_to_the_model() -> None:
    steps = [TIME_FLOW[0], ScriptStep(text="Fine, no time.")]
    agent = {"model": "scripted", "tools": ["time"], "require_approval": ["current_time"]}
    async with api(steps, assistant=agent) as client:
        paused = (await client.post("/v1/agents/assistant/runs", json={"input": "t", "session_id": "s1"})).json()
        done = (await client.post(f"/v1/runs/{paused['id']}/approve", json={"approved": False, "wait": True})).json()
        session = (await client.get("/v1/sessions/s1")).json()
    assert done["state"] == "succeeded" and done["output"] == "Fine, no time."
    tool = next(m for m in session["messages"] if m["role"] == "tool")
    assert tool["content"] == "The user denied this tool call."


async def test_cancel_stops_a_running_run() -> None:
    async with api([ScriptStep(text="slow", delay=30)], assistant={"model": "scripted"}) as client:
        queued = (await client.post("/v1/agents/assistant/runs", json={"input": "t", "mode": "background"})).json()
        await poll(client, queued["id"], {"running"})
        cancelled = (await client.post(f"/v1/runs/{queued['id']}/cancel")).json()
        again = await client.post(f"/v1/runs/{queued['id']}/cancel")
    assert cancelled["state"] == "cancelled" and cancelled["error"] == "cancelled"
    assert again.status_code == 409


async def test_run_timeout_fails_the_run_with_the_reason() -> None:
    async with api([ScriptStep(text="slow", delay=30)], assistant={"model": "scripted", "timeout": 0.2}) as client:
        run = (await client.post("/v1/agents/assistant/runs", json={"input": "t"})).json()
    assert run["state"] == "failed" and run["error"] == "timed out after 0.2s"


async def test_sessions_are_listed_shown_and_deleted() -> None:
    steps = [ScriptStep(text="one"), ScriptStep(text="two")]
    async with api(steps, assistant={"model": "scripted"}, other={"model": "scripted"}) as client:
        await client.post("/v1/agents/assistant/runs", json={"input": "a", "session_id": "s-a"})
        await client.post("/v1/agents/assistant/runs", json={"input": "b", "session_id": "s-a"})
        conflict = await client.post("/v1/agents/other/runs", json={"input": "c", "session_id": "s-a"})
        listed = (await client.get("/v1/sessions", params={"agent": "assistant"})).json()
        shown = (await client.get("/v1/sessions/s-a")).json()
        deleted = await client.delete("/v1/sessions/s-a")
        gone = await client.get("/v1/sessions/s-a")
    assert conflict.status_code == 409
    assert [s["id"] for s in listed["data"]] == ["s-a"]
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "a"), ("assistant", "one"), ("user", "b"), ("assistant", "two")]
    assert deleted.json()["deleted"] is True and gone.status_code == 404


async def test_unknown_agent_and_run_are_404_in_openai_error_format() -> None:
    async with api([], assistant={"model": "scripted"}, hidden={"model": "scripted", "visibility": "internal"}) as c:
        unknown = await c.post("/v1/agents/nope/runs", json={"input": "x"})
        hidden = await c.post("/v1/agents/hidden/runs", json={"input": "x"})
        run = await c.get("/v1/runs/run_missing")
        bad = await c.post("/v1/agents/assistant/runs", json={"mode": "wait"})
        listed = (await c.get("/v1/agents")).json()
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "unknown agent 'nope'"
    assert hidden.status_code == 404
    assert run.status_code == 404 and run.json()["error"]["code"] == "not_found"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert [a["id"] for a in listed["data"]] == ["assistant"]


async def test_joining_a_background_run_streams_its_events_to_the_end() -> None:
    steps = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="late", delay=1.0)]
    async with api(steps, assistant={"model": "scripted", "tools": ["time"]}) as client:
        queued = (await client.post("/v1/agents/assistant/runs", json={"input": "t", "mode": "background"})).json()
        await poll(client, queued["id"], {"running"})
        await asyncio.sleep(0.1)
        async with client.stream("GET", f"/v1/runs/{queued['id']}/events") as response:
            events = [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]
        after = [json.loads(line[6:]) for line in (await client.get(f"/v1/runs/{queued['id']}/events")).text
                 .splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "run.created" and events[-1]["type"] == "run.finished"
    assert events[-1]["output"] == "late"
    assert after == [{"type": "run.state", "run": after[0]["run"]}] and after[0]["run"]["state"] == "succeeded"


async def test_runs_and_tool_calls_are_counted_on_the_metrics_endpoint() -> None:
    async with api(TIME_FLOW, assistant={"model": "scripted", "tools": ["time"]}) as client:
        await client.post("/v1/agents/assistant/runs", json={"input": "t"})
        text = (await client.get("/metrics")).text
    assert 'corral_agent_runs_total{agent="assistant",status="completed"} 1.0' in text
    assert 'corral_tool_calls_total{agent="assistant",outcome="ok",tool="current_time"} 1.0' in text
    assert 'corral_agent_run_duration_seconds_count{agent="assistant"} 1.0' in text


async def test_rest_runs_are_accounted_like_model_calls() -> None:
    steps = [ScriptStep(text="counted", usage={"input_tokens": 11, "output_tokens": 5})]
    async with api(steps, assistant={"model": "scripted"}) as client:
        await client.post("/v1/agents/assistant/runs", json={"input": "t"})
        text = (await client.get("/metrics")).text
    assert 'corral_requests_total{model="assistant",status="200",surface="agents"} 1.0' in text
    assert 'corral_tokens_total{kind="output",model="assistant"} 5.0' in text
    assert 'corral_tokens_total{kind="input",model="assistant"} 11.0' in text


async def test_a_client_that_joined_a_run_and_left_does_not_cancel_it() -> None:
    steps = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="kept", delay=0.5)]
    async with api(steps, assistant={"model": "scripted", "tools": ["time"]}) as client:
        queued = (await client.post("/v1/agents/assistant/runs", json={"input": "t", "mode": "background"})).json()
        await poll(client, queued["id"], {"running"})
        async with client.stream("GET", f"/v1/runs/{queued['id']}/events") as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break  # the watcher goes away after the first event
        done = await poll(client, queued["id"], {"succeeded", "failed", "cancelled"})
    assert done["state"] == "succeeded" and done["output"] == "kept"
