"""Two real `corral serve` replicas on one Postgres and one Redis: a run executing on
one replica streams, complete and in order, from the other (`GET /v1/runs/{id}/events`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.testing.process import ServeProcess, start_serve

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

ANSWER = "one two three four five six seven eight nine ten eleven twelve"
CONFIG = """
version: 1
providers:
  script:
    type: scripted
    script:
      - tool_calls: [{{name: current_time, arguments: {{timezone: UTC}}}}]
        delay: 0.5
      - text: "{answer}"
        chunk_delay: 0.08
        usage: {{input_tokens: 30, output_tokens: 12}}
models:
  scripted:
    provider: script
    model: scripted
database:
  url: {database}
cache:
  url: {redis}
  prefix: "{prefix}"
runs:
  workers: ${{RUN_WORKERS:-1}}
  poll_interval: 0.1
agents:
  assistant:
    model: scripted
    tools: [time]
"""


async def events(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]


async def test_a_run_executing_on_one_replica_streams_in_full_from_the_other(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: Any,
    serve_processes: list[ServeProcess],
) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG.format(answer=ANSWER, database=postgres_url, redis=redis_url, prefix=redis_prefix))
    a = start_serve(config)
    serve_processes.append(a)
    b = start_serve(config, env={"RUN_WORKERS": "0"})  # B claims nothing: the run executes on A
    serve_processes.append(b)

    async with httpx.AsyncClient(timeout=30) as client:
        queued = (await client.post(f"{a.base_url}/v1/agents/assistant/runs",
                                    json={"input": "what time is it?", "mode": "background"})).json()
        run_id = queued["id"]
        assert queued["state"] == "queued"
        # B joins at once (the run is still queued, or A has just claimed it); a second
        # client joins B in the middle of the answer, when part of it is already stored.
        from_b = asyncio.create_task(events(client, f"{b.base_url}/v1/runs/{run_id}/events"))
        deadline = time.monotonic() + 10
        while (await client.get(f"{a.base_url}/v1/runs/{run_id}")).json()["state"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        on_a = asyncio.create_task(events(client, f"{a.base_url}/v1/runs/{run_id}/events"))  # A's local view
        await asyncio.sleep(1.0)  # past the tool call, into the streamed answer
        late_b = await events(client, f"{b.base_url}/v1/runs/{run_id}/events")
        first_b, local = await from_b, await on_a
        after = await events(client, f"{b.base_url}/v1/runs/{run_id}/events")

    kinds = [e["type"] for e in first_b]
    assert kinds == ["run.created", "usage", "tool.call", "tool.result", *["text.delta"] * 12, "usage",
                     "run.finished"]
    assert "".join(e["text"] for e in first_b if e["type"] == "text.delta") == ANSWER  # every delta, once, in order
    assert first_b[2]["name"] == "current_time" and first_b[3]["id"] == first_b[2]["id"]
    finished = first_b[-1]
    assert finished["status"] == "completed" and finished["output"] == ANSWER
    assert finished["usage"]["output_tokens"] >= 12

    # Both joins on B saw exactly what the executing replica streams to its own clients.
    assert first_b[1:] == local[1:]
    assert late_b[1:] == local[1:]
    assert late_b[0]["run"]["state"] == "running"
    # Once the run is over, joining shows its stored state, as on a single replica.
    assert [e["type"] for e in after] == ["run.state"] and after[0]["run"]["state"] == "succeeded"

    stream = await redis_client.xrange(f"{redis_prefix}run:{run_id}:events")
    assert [entry_id for entry_id, _ in stream] == [f"1-{n}".encode() for n in range(1, len(local))]
    assert 0 < await redis_client.ttl(f"{redis_prefix}run:{run_id}:events") <= 3600
