"""``/mcp``: agents as MCP tools, through the official `mcp` client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


@asynccontextmanager
async def server(steps: list[ScriptStep], **agents: dict[str, Any]) -> AsyncIterator[str]:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": agents,
    })
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", steps)})
    async with serve_app(app) as url:
        yield url


AGENTS = {
    "assistant": {"model": "scripted", "description": "Answers questions.", "tools": ["time"]},
    "secret": {"model": "scripted", "visibility": "internal"},
    "unlisted": {"model": "scripted", "mcp": False},
}


async def test_mcp_client_lists_public_agents_as_tools_and_calls_one() -> None:
    steps = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="Noon.")]
    async with server(steps, **AGENTS) as url, Client(f"{url}/mcp") as client:
        listed = await client.list_tools()
        result = await client.call_tool("assistant", {"input": "time?", "session_id": "mcp-1"})
        missing = await client.call_tool("assistant", {})
    tools = {t.name: t for t in listed.tools}
    assert sorted(tools) == ["assistant"]
    assert tools["assistant"].description == "Answers questions."
    assert tools["assistant"].input_schema["required"] == ["input"]
    assert not result.is_error and result.content[0].text == "Noon."
    assert missing.is_error and "`input`" in missing.content[0].text


async def test_failed_agent_run_is_an_mcp_error_result() -> None:
    async with server([ScriptStep(error="bad_request")], assistant={"model": "scripted"}) as url, \
            Client(f"{url}/mcp") as client:
        result = await client.call_tool("assistant", {"input": "x"})
    assert result.is_error and "failed" in result.content[0].text


async def test_knowledge_bases_are_exported_as_search_tools(tmp_path) -> None:
    import json

    (tmp_path / "runbook.md").write_text("# Restarts\n\nRestart the node with corral restart node-a.\n")
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "knowledge": {"ops": {"sources": [str(tmp_path / "*.md")], "embedder": {"type": "offline"}}},
    })
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", [])})
    await app.state.gateway.knowledge.ingest("ops")
    async with serve_app(app) as url, Client(f"{url}/mcp") as client:
        listed = await client.list_tools()
        result = await client.call_tool("search_ops", {"query": "how do I restart a node?", "top_k": 1})
    assert [t.name for t in listed.tools] == ["search_ops"]
    passages = json.loads(result.content[0].text)["passages"]
    assert not result.is_error and passages[0]["source"].endswith("runbook.md")
    assert "corral restart node-a" in passages[0]["text"]
