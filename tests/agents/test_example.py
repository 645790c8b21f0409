"""`examples/agents.yaml` loads and runs as documented: the assistant calls the time
tool, hands off to the writer, and the writer answers."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai

from corral.config.loader import load_config
from corral.gateway.app import create_app
from corral.testing.server import serve_app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agents.yaml"


async def test_example_agents_run_tool_then_handoff_over_rest_stream() -> None:
    loaded = load_config(EXAMPLE, env={})
    async with serve_app(create_app(loaded.config)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/v1/agents/assistant/runs",
                               json={"input": "What time is it? Write it down.", "mode": "stream"}) as response:
            events = [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]
        agents = (await http.get("/v1/agents")).json()
    calls = [(e["agent"], e["name"]) for e in events if e["type"] == "tool.call"]
    assert calls == [("assistant", "current_time"), ("assistant", "transfer_to_writer")]
    assert [e["target"] for e in events if e["type"] == "handoff"] == ["writer"]
    assert events[-1]["status"] == "completed"
    assert events[-1]["output"] == "Noted: I checked the clock for you and wrote it down."
    assert [a["id"] for a in agents["data"]] == ["assistant"]  # the writer is internal


async def test_example_assistant_answers_the_openai_sdk() -> None:
    loaded = load_config(EXAMPLE, env={})
    async with serve_app(create_app(loaded.config)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        try:
            completion = await client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "What time is it?"}])
        finally:
            await client.close()
    assert completion.choices[0].message.content == "Noted: I checked the clock for you and wrote it down."
