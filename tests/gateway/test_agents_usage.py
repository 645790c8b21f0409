"""Agent runs are charged like chat completions on every surface (chat, REST in the
foreground or background, A2A, MCP): each model call of a run is a usage row of the
caller, its cost counts against the caller's budget, and a spent budget refuses the
next run. Clients are the official `openai`, `a2a-sdk` and `mcp` SDKs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import openai
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.errors import A2AClientError
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

MASTER = "sk-master-agent-usage-0123456789"
TINY = 0.000001  # USD: the first run spends it
# Two model calls (a tool call, then the answer) with known usage: $0.36 at the prices below.
TIME_FLOW = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}],
                        usage={"input_tokens": 100, "output_tokens": 10}),
             ScriptStep(text="It is noon.", usage={"input_tokens": 200, "output_tokens": 20})]
FLOW_COST = (300 * 1000 + 30 * 2000) / 1_000_000


@asynccontextmanager
async def gateway(steps: list[ScriptStep] | None = None, jwt: dict[str, Any] | None = None,
                  **agent: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": {"assistant": {"model": "scripted", "tools": ["time"], "description": "Tells time.", **agent}},
        "auth": {"master_key": MASTER, **({"jwt": jwt} if jwt else {})},
        "pricing": {"scripted": {"input": 1000, "output": 2000}},
        "runs": {"poll_interval": 0.05},
    })
    provider = ScriptedProvider.from_steps("script", steps or [])
    async with serve_app(create_app(config, providers={"script": provider})) as url, httpx.AsyncClient(
        base_url=url, headers={"authorization": f"Bearer {MASTER}"}, timeout=30
    ) as admin:
        yield url, admin


async def new_key(admin: httpx.AsyncClient, **settings: Any) -> dict[str, Any]:
    return dict((await admin.post("/admin/keys", json=settings)).json())


async def rows_of(admin: httpx.AsyncClient, key_id: str, count: int) -> list[dict[str, Any]]:
    """The key's usage by model, once ``count`` rows are written (the batch writer is async)."""
    for _ in range(100):
        report = (await admin.get("/admin/spend", params={"group_by": "model", "key_id": key_id})).json()
        if sum(r["requests"] for r in report["data"]) >= count:
            return list(report["data"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the usage rows of {key_id} never reached {count}: {report}")


def user(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)]))


async def test_chat_with_an_agent_is_charged_per_model_call_at_the_models_price() -> None:
    async with gateway(TIME_FLOW) as (url, admin):
        key = await new_key(admin, name="chat")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key["key"], max_retries=0) as sdk:
            reply = await sdk.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "t?"}])
        rows = await rows_of(admin, key["id"], 2)
        spend = (await admin.get(f"/admin/keys/{key['id']}")).json()
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (300, 30)
    # One row per model call, priced as the model the agent called; no second row for the agent itself.
    assert rows == [{"model": "scripted", "requests": 2, "input_tokens": 300, "output_tokens": 30,
                     "cost_usd": pytest.approx(FLOW_COST)}]
    assert spend["spend"] is None  # no budget on this key: nothing to show, but the rows are there


async def test_an_a2a_run_is_charged_to_the_key_and_a_spent_budget_refuses_the_next_message() -> None:
    async with gateway(TIME_FLOW) as (url, admin):
        key = await new_key(admin, max_budget=TINY, budget_duration="1d")
        async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {key['key']}"}) as http:
            client = await create_client(f"{url}/a2a/assistant", ClientConfig(httpx_client=http, streaming=False))
            try:
                [first] = [r async for r in client.send_message(user("what time is it?"))]
                rows = await rows_of(admin, key["id"], 2)
                with pytest.raises(A2AClientError, match="HTTP Error 402"):
                    [r async for r in client.send_message(user("and now?"))]
            finally:
                await client.close()
        fetched = (await admin.get(f"/admin/keys/{key['id']}")).json()
    assert first.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert rows[0]["requests"] == 2 and rows[0]["cost_usd"] == pytest.approx(FLOW_COST)
    assert fetched["spend"] == pytest.approx(FLOW_COST)


async def test_a_streamed_a2a_run_is_charged_too() -> None:
    async with gateway(TIME_FLOW) as (url, admin):
        key = await new_key(admin, max_budget=1.0)
        async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {key['key']}"}) as http:
            client = await create_client(f"{url}/a2a/assistant", ClientConfig(httpx_client=http, streaming=True))
            try:
                events = [e async for e in client.send_message(user("time?"))]
            finally:
                await client.close()
        rows = await rows_of(admin, key["id"], 2)
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert rows[0]["cost_usd"] == pytest.approx(FLOW_COST)


@asynccontextmanager
async def mcp_client(url: str, token: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30) as http, \
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        yield client


async def test_an_mcp_tool_call_is_admitted_like_a_chat_request_and_charged() -> None:
    async with gateway(TIME_FLOW) as (url, admin):
        key = await new_key(admin, max_budget=TINY)
        other = await new_key(admin, models=["scripted"])  # may not call the agent
        async with mcp_client(url, key["key"]) as client:
            listed = await client.list_tools()
            answered = await client.call_tool("assistant", {"input": "time?"})
            rows = await rows_of(admin, key["id"], 2)
            refused = await client.call_tool("assistant", {"input": "again?"})
        async with mcp_client(url, other["key"]) as client:
            forbidden = await client.call_tool("assistant", {"input": "time?"})
    assert [t.name for t in listed.tools] == ["assistant"]
    assert not answered.is_error and answered.content[0].text == "It is noon."
    assert rows[0]["requests"] == 2 and rows[0]["cost_usd"] == pytest.approx(FLOW_COST)
    assert refused.is_error and refused.content[0].text.startswith("Budget exceeded: the budget of this key")
    assert forbidden.is_error and "may not use the model 'assistant'" in forbidden.content[0].text


async def test_a_background_rest_run_is_charged_when_a_worker_runs_it() -> None:
    async with gateway(TIME_FLOW) as (_url, admin):
        key = await new_key(admin, max_budget=TINY)
        headers = {"authorization": f"Bearer {key['key']}"}
        queued = await admin.post("/v1/agents/assistant/runs", json={"input": "t", "mode": "background"},
                                  headers=headers)
        for _ in range(200):
            run = (await admin.get(f"/v1/runs/{queued.json()['id']}")).json()
            if run["state"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        rows = await rows_of(admin, key["id"], 2)
        refused = await admin.post("/v1/agents/assistant/runs", json={"input": "t"}, headers=headers)
    assert queued.status_code == 202 and run["state"] == "succeeded" and run["output"] == "It is noon."
    assert rows[0]["requests"] == 2 and rows[0]["cost_usd"] == pytest.approx(FLOW_COST)
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "budget_exceeded"


async def test_a_run_resumed_after_approval_is_charged_to_the_caller_that_started_it() -> None:
    async with gateway(TIME_FLOW, require_approval=["current_time"]) as (_url, admin):
        key = await new_key(admin, name="approver")
        started = (await admin.post("/v1/agents/assistant/runs", json={"input": "t"},
                                    headers={"authorization": f"Bearer {key['key']}"})).json()
        approved = (await admin.post(f"/v1/runs/{started['id']}/approve", json={"wait": True})).json()
        rows = await rows_of(admin, key["id"], 2)  # the master key approved; the key's caller pays
    assert started["state"] == "input-required" and approved["state"] == "succeeded"
    assert rows[0]["requests"] == 2 and rows[0]["cost_usd"] == pytest.approx(FLOW_COST)


async def test_a_jwt_callers_run_is_charged_to_its_subject_and_its_budget_refuses_the_next_run() -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from tests.gateway.test_auth_jwt import AUDIENCE, ISSUER, Issuer

    issuer = Issuer()
    jwks = Starlette(routes=[Route("/jwks", lambda _: JSONResponse(issuer.jwks()))])
    async with serve_app(jwks) as jwks_url:
        jwt = {"jwks_url": f"{jwks_url}/jwks", "issuer": ISSUER, "audience": AUDIENCE,
               "limits": {"max_budget": TINY, "budget_duration": "1d"}}
        async with gateway(TIME_FLOW, jwt=jwt) as (url, admin):
            headers = {"authorization": f"Bearer {issuer.token(sub='ana', team='research')}"}
            async with httpx.AsyncClient(timeout=30, headers=headers) as http:
                client = await create_client(f"{url}/a2a/assistant", ClientConfig(httpx_client=http, streaming=False))
                try:
                    [first] = [r async for r in client.send_message(user("time?"))]
                finally:
                    await client.close()
            for _ in range(100):
                report = (await admin.get("/admin/spend", params={"group_by": "subject"})).json()
                if report["data"] and report["data"][0]["requests"] >= 2:
                    break
                await asyncio.sleep(0.05)
            teams = (await admin.get("/admin/spend", params={"group_by": "team"})).json()
            refused = await admin.post("/v1/agents/assistant/runs", json={"input": "t"}, headers=headers)
    assert first.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert [(r["subject"], r["requests"]) for r in report["data"]] == [("ana", 2)]
    assert report["data"][0]["cost_usd"] == pytest.approx(FLOW_COST)
    assert [r["team"] for r in teams["data"]] == ["research"]
    assert refused.status_code == 402 and "the budget of this caller" in refused.json()["error"]["message"]


async def test_spend_by_agent_names_the_agent_of_every_row_in_the_api_and_the_cli() -> None:
    from typer.testing import CliRunner

    from corral.cli.main import build_app

    async with gateway(TIME_FLOW) as (url, admin):
        key = await new_key(admin, name="by-agent")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key["key"], max_retries=0) as sdk:
            await sdk.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "t?"}])
            await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "plain"}])
        await rows_of(admin, key["id"], 3)
        report = (await admin.get("/admin/spend", params={"group_by": "agent"})).json()
        result = await asyncio.to_thread(CliRunner().invoke, build_app(), [
            "spend", "--group-by", "agent", "--server", url, "--format", "json"], env={"CORRAL_MASTER_KEY": MASTER})
    by_agent = {r["agent"]: (r["requests"], r["cost_usd"]) for r in report["data"]}
    assert by_agent["assistant"] == (2, pytest.approx(FLOW_COST))  # both model calls of the agent's run
    assert by_agent[None][0] == 1  # the call made to the model directly
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data"] == report["data"]
