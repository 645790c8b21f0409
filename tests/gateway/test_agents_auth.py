"""Agents behind the gateway's auth: REST, A2A and /mcp need a key; sessions belong to
the key that made them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

MASTER = "sk-master-for-tests"


@asynccontextmanager
async def secured() -> AsyncIterator[str]:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": {"assistant": {"model": "scripted"}},
        "auth": {"master_key": MASTER},
    })
    provider = ScriptedProvider.from_steps("script", [ScriptStep(text="hi")])
    async with serve_app(create_app(config, providers={"script": provider})) as url:
        yield url


async def test_agent_routes_need_a_key_but_cards_are_public() -> None:
    async with secured() as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        run = await http.post("/v1/agents/assistant/runs", json={"input": "x"})
        sessions = await http.get("/v1/sessions")
        agents = await http.get("/v1/agents")
        a2a = await http.post("/a2a/assistant", json={"jsonrpc": "2.0", "id": 1, "method": "tasks/get",
                                                      "params": {"id": "x"}})
        mcp = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                              headers={"accept": "application/json, text/event-stream"})
        card = await http.get("/.well-known/agent-card.json")
        authorized = await http.post("/v1/agents/assistant/runs", json={"input": "x"},
                                     headers={"authorization": f"Bearer {MASTER}"})
    assert [r.status_code for r in (run, sessions, agents, a2a, mcp)] == [401] * 5
    assert run.json()["error"]["code"] == "missing_api_key"
    assert card.status_code == 200
    assert authorized.status_code == 200 and authorized.json()["output"] == "hi"


async def test_sessions_are_private_to_the_key_that_made_them() -> None:
    async with secured() as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        admin = {"authorization": f"Bearer {MASTER}"}
        keys = [(await http.post("/admin/keys", json={"name": n}, headers=admin)).json()["key"] for n in "ab"]
        alice, bob = ({"authorization": f"Bearer {k}"} for k in keys)
        await http.post("/v1/agents/assistant/runs", json={"input": "x", "session_id": "alice-1"}, headers=alice)
        own = (await http.get("/v1/sessions", headers=alice)).json()
        other = (await http.get("/v1/sessions", headers=bob)).json()
        peek = await http.get("/v1/sessions/alice-1", headers=bob)
        hijack = await http.post("/v1/agents/assistant/runs", json={"input": "y", "session_id": "alice-1"},
                                 headers=bob)
        everything = (await http.get("/v1/sessions", headers=admin)).json()
    assert [s["id"] for s in own["data"]] == ["alice-1"]
    assert other["data"] == [] and peek.status_code == 404 and hijack.status_code == 409
    assert [s["id"] for s in everything["data"]] == ["alice-1"]
