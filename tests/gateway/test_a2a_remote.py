"""Remote A2A agents as sub-agents: one Corral calls an agent served by another."""

from __future__ import annotations

from typing import Any

import httpx

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


def config(agents: dict[str, Any]) -> CorralConfig:
    return CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": agents,
    })


async def test_remote_agent_as_tool_and_as_handoff_target() -> None:
    far_provider = ScriptedProvider.from_steps("script", [ScriptStep(text="Far says 7."),
                                                          ScriptStep(text="Far takes over.")])
    far_app = create_app(config({"far": {"model": "scripted", "description": "Knows numbers."}}),
                         providers={"script": far_provider})
    async with serve_app(far_app) as far_url:
        near_steps = [ScriptStep(tool_calls=[{"name": "far", "arguments": {"input": "what number?"}}]),
                      ScriptStep(text="Near heard: 7."),
                      ScriptStep(tool_calls=[{"name": "transfer_to_far", "arguments": {}}])]
        near_provider = ScriptedProvider.from_steps("script", near_steps)
        remote = {"type": "remote", "url": f"{far_url}/a2a/far", "description": "A remote agent."}
        near_app = create_app(config({
            "asker": {"model": "scripted", "agent_tools": ["far"]},
            "delegator": {"model": "scripted", "sub_agents": ["far"]},
            "far": remote,
        }), providers={"script": near_provider})
        async with serve_app(near_app) as near_url, httpx.AsyncClient(base_url=near_url, timeout=30) as http:
            asked = (await http.post("/v1/agents/asker/runs", json={"input": "ask far", "session_id": "n1"})).json()
            session = (await http.get("/v1/sessions/n1")).json()
            delegated = (await http.post("/v1/agents/delegator/runs", json={"input": "go to far"})).json()
    assert asked["state"] == "succeeded" and asked["output"] == "Near heard: 7."
    assert [m["content"] for m in session["messages"] if m["role"] == "tool"] == ["Far says 7."]
    assert far_provider.requests[0].messages[-1].text_content == "what number?"
    assert delegated["state"] == "succeeded" and delegated["output"] == "Far takes over."
    assert far_provider.requests[1].messages[-1].text_content == "go to far"
