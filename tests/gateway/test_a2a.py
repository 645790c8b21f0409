"""The A2A server, through the official `a2a-sdk` client (v1.0 methods) and raw v0.3
JSON-RPC (``message/send``, ``tasks/get``...)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import CancelTaskRequest, GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState
from a2a.utils.errors import TaskNotCancelableError

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

TIME_FLOW = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="It is noon.")]


@asynccontextmanager
async def server(steps: list[ScriptStep], **agents: dict[str, Any]) -> AsyncIterator[str]:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": agents or {"assistant": {"model": "scripted", "tools": ["time"], "description": "Tells time."}},
    })
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", steps)})
    async with serve_app(app) as url:
        yield url


@asynccontextmanager
async def a2a(url: str, *, streaming: bool) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(f"{url}/a2a/assistant", ClientConfig(httpx_client=http, streaming=streaming))
        try:
            yield client
        finally:
            await client.close()


def user(text: str, context_id: str | None = None) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)])
    if context_id:
        message.context_id = context_id
    return SendMessageRequest(message=message)


async def test_agent_cards_describe_each_public_agent_for_v1_and_v03_clients() -> None:
    async with server(TIME_FLOW) as url, httpx.AsyncClient(base_url=url) as http:
        root = (await http.get("/.well-known/agent-card.json")).json()
        per_agent = (await http.get("/a2a/assistant/.well-known/agent-card.json")).json()
        missing = await http.get("/a2a/nope/.well-known/agent-card.json")
    assert root == per_agent
    assert root["name"] == "assistant" and root["description"] == "Tells time."
    assert {(i["protocolVersion"], i["url"]) for i in root["supportedInterfaces"]} == {
        ("1.0", f"{url}/a2a/assistant"), ("0.3", f"{url}/a2a/assistant")}
    assert root["url"] == f"{url}/a2a/assistant" and root["capabilities"]["streaming"] is True
    assert missing.status_code == 404


async def test_sdk_send_message_returns_a_completed_task_and_get_task_finds_it() -> None:
    async with server(TIME_FLOW) as url, a2a(url, streaming=False) as client:
        responses = [r async for r in client.send_message(user("what time is it?", "ctx-1"))]
        task = responses[0].task
        fetched = await client.get_task(GetTaskRequest(id=task.id))
        with pytest.raises(TaskNotCancelableError, match="already succeeded"):
            await client.cancel_task(CancelTaskRequest(id=task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.context_id == "ctx-1"
    assert task.artifacts[0].parts[0].text == "It is noon."
    assert fetched.id == task.id and fetched.status.state == TaskState.TASK_STATE_COMPLETED


async def test_sdk_streaming_yields_task_then_artifact_chunks_then_final_status() -> None:
    async with server(TIME_FLOW) as url, a2a(url, streaming=True) as client:
        events = [e async for e in client.send_message(user("time?"))]
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task" and kinds[-1] == "status_update"
    text = "".join(e.artifact_update.artifact.parts[0].text for e in events if e.HasField("artifact_update"))
    assert text == "It is noon."
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_context_id_continues_the_session_across_messages() -> None:
    steps = [ScriptStep(text="Hello Ada."), ScriptStep(text="You are Ada.")]
    async with server(steps, assistant={"model": "scripted"}) as url, a2a(url, streaming=False) as client:
        [r async for r in client.send_message(user("I am Ada", "ctx-ada"))]
        replies = [r async for r in client.send_message(user("who am I?", "ctx-ada"))]
        second = replies[0].task
        async with httpx.AsyncClient(base_url=url) as http:
            session = (await http.get("/v1/sessions/ctx-ada")).json()
    assert second.artifacts[0].parts[0].text == "You are Ada."
    assert [m["content"] for m in session["messages"]] == ["I am Ada", "Hello Ada.", "who am I?", "You are Ada."]


async def rpc(http: httpx.AsyncClient, method: str, params: dict[str, Any], version: str = "0.3") -> dict[str, Any]:
    response = await http.post("/a2a/assistant", headers={"A2A-Version": version},
                               json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    return dict(response.json())


async def test_v03_method_names_are_accepted_with_v03_payloads() -> None:
    async with server(TIME_FLOW) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        sent = await rpc(http, "message/send", {"message": {
            "kind": "message", "role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "time?"}]}})
        task = sent["result"]
        got = await rpc(http, "tasks/get", {"id": task["id"]})
        cancel = await rpc(http, "tasks/cancel", {"id": task["id"]})
        v1 = await rpc(http, "GetTask", {"id": task["id"]}, version="1.0")
        unknown = await rpc(http, "tasks/get", {"id": "run_nope"})
    assert task["kind"] == "task" and task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"][0] == {"kind": "text", "text": "It is noon."}
    assert got["result"]["status"]["state"] == "completed"
    assert cancel["error"]["code"] == -32002  # TaskNotCancelableError
    assert v1["result"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert unknown["error"]["code"] == -32001  # TaskNotFoundError


async def test_failed_run_maps_to_failed_task_state_with_the_reason() -> None:
    async with server([ScriptStep(error="bad_request")], assistant={"model": "scripted"}) as url, \
            a2a(url, streaming=False) as client:
        replies = [r async for r in client.send_message(user("x"))]
        task = replies[0].task
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "model error (400)" in task.status.message.parts[0].text


async def test_run_waiting_for_approval_is_an_input_required_task() -> None:
    agent = {"model": "scripted", "tools": ["time"], "require_approval": ["current_time"]}
    async with server(TIME_FLOW, assistant=agent) as url, a2a(url, streaming=False) as client:
        replies = [r async for r in client.send_message(user("time?"))]
        task = replies[0].task
        async with httpx.AsyncClient(base_url=url) as http:
            approved = (await http.post(f"/v1/runs/{task.id}/approve", json={"wait": True})).json()
        done = await client.get_task(GetTaskRequest(id=task.id))
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert task.status.message.parts[0].text == "waiting for approval of: current_time"
    assert approved["state"] == "succeeded"
    assert done.status.state == TaskState.TASK_STATE_COMPLETED and done.artifacts[0].parts[0].text == "It is noon."


async def test_streamed_output_ends_with_a_last_chunk_and_tasks_carry_their_history() -> None:
    async with server(TIME_FLOW) as url, a2a(url, streaming=True) as client:
        events = [e async for e in client.send_message(user("time?", "ctx-h"))]
        task_id = events[0].task.id
        fetched = await client.get_task(GetTaskRequest(id=task_id))
    updates = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert [u.last_chunk for u in updates] == [False] * (len(updates) - 1) + [True]
    assert [(m.role, m.parts[0].text) for m in fetched.history] == [
        (Role.ROLE_USER, "time?"), (Role.ROLE_AGENT, "It is noon.")]


async def test_errors_echo_the_request_id_and_push_notifications_are_unsupported_by_code() -> None:
    async with server(TIME_FLOW) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        unknown = await http.post("/a2a/nobody", json={"jsonrpc": "2.0", "id": "req-7", "method": "tasks/get",
                                                       "params": {"id": "x"}})
        push = await rpc(http, "tasks/pushNotificationConfig/set", {
            "taskId": "t1", "pushNotificationConfig": {"url": "https://example.com/hook"}})
    assert unknown.status_code == 404 and unknown.json()["id"] == "req-7"
    assert push["error"]["code"] == -32003  # PushNotificationNotSupportedError


async def test_the_card_declares_bearer_auth_when_the_gateway_requires_a_key() -> None:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": {"assistant": {"model": "scripted"}},
        "auth": {"master_key": "sk-master-card"},
    })
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", [])})
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
    bearer = card["securitySchemes"]["bearer"]
    assert bearer["httpAuthSecurityScheme"]["scheme"] == "bearer"  # v1.0
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")  # v0.3 clients read these
    assert [set(r["schemes"]) for r in card["securityRequirements"]] == [{"bearer"}]
