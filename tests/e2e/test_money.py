"""Money that nothing dodges or loses, tried as an operator would: real `corral serve`
processes on one Postgres (and Redis), kill -9, SIGTERM, clients that leave.

Each test is one row of docs/limits.md's table of guarantees."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.store import Store
from corral.testing.process import ServeProcess, start_serve

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MASTER = "sk-master-money-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}
# The scripted model echoes "You said: hello there": 3 input and 6 output tokens (4
# characters a token), at $10,000 per million tokens: $0.09 a call.
CALL_COST = 0.09
CONFIG = """
version: 1
providers:
  script:
    type: scripted
{script}
models:
  chat:
    provider: script
    model: scripted
pricing:
  scripted:
    input: {price}
    output: {price}
database:
  url: {database}
auth:
  master_key: {master}
server:
  shutdown_timeout: {shutdown_timeout}
billing:
  fsync_interval: 0.05
{extra}
"""
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


def write_config(tmp_path: Path, database: str, *, script: str = "", price: float = 10000, extra: str = "",
                 shutdown_timeout: float = 20) -> Path:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG.format(database=database, master=MASTER, script=script, price=price, extra=extra,
                                    shutdown_timeout=shutdown_timeout))
    return config


def redis_section(redis_url: str, prefix: str) -> str:
    return f'cache:\n  url: {redis_url}\n  prefix: "{prefix}"\n'


def create_key(base_url: str, **limits: object) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/admin/keys", json=limits, timeout=10, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


def key_spend(base_url: str, key_id: str) -> float:
    return float(httpx.get(f"{base_url}/admin/keys/{key_id}", headers=ADMIN, timeout=10).json()["spend"])


async def stored_rows(postgres_url: str, *, expect: int, seconds: float = 10.0) -> list[dict[str, Any]]:
    """The usage rows, once there are ``expect`` of them (or the deadline passed)."""
    from sqlalchemy import select

    from corral.store.models import usage_records

    store = await Store.open(postgres_url, upgrade=False)
    try:
        deadline = time.monotonic() + seconds
        while True:
            async with store.engine.connect() as conn:
                rows = [dict(r) for r in (await conn.execute(select(usage_records))).mappings()]
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.2)
    finally:
        await store.aclose()


def kill_9(server: ServeProcess) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)


# ---- kill -9 under load ------------------------------------------------------------


async def test_kill_9_under_load_loses_no_answered_call(
    tmp_path: Path, postgres_url: str, serve_processes: list[ServeProcess],
) -> None:
    config = write_config(tmp_path, postgres_url)
    server = start_serve(config)
    serve_processes.append(server)
    key = create_key(server.base_url, max_budget=1e6)  # a budget: its spend is counted
    headers = {"authorization": f"Bearer {key['key']}"}
    answered: list[str] = []
    stop = asyncio.Event()

    async def client(n: int, http: httpx.AsyncClient) -> None:
        i = 0
        while not stop.is_set():
            request_id = f"load-{n}-{i}"
            i += 1
            try:
                response = await http.post(f"{server.base_url}/v1/chat/completions", json=BODY,
                                           headers={**headers, "x-request-id": request_id})
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200 and response.json()["choices"][0]["message"]["content"]:
                answered.append(request_id)

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=16)) as http:
        clients = [asyncio.create_task(client(n, http)) for n in range(16)]
        await asyncio.sleep(1.5)
        kill_9(server)  # mid-load: rows are queued for the batch writer
        stop.set()
        await asyncio.gather(*clients)
    assert len(answered) > 20

    restarted = start_serve(config)
    serve_processes.append(restarted)
    rows = await stored_rows(postgres_url, expect=len(answered))
    recorded = {r["request_id"] for r in rows}
    assert [r for r in answered if r not in recorded] == []
    assert len(rows) >= len(answered)  # (a call answered as the process died may be recorded too)
    assert key_spend(restarted.base_url, key["id"]) == pytest.approx(sum(r["cost_usd"] for r in rows))


# ---- a reused x-request-id ------------------------------------------------------------


async def test_a_reused_request_id_is_billed_per_call_and_the_budget_holds_after_a_restart(
    tmp_path: Path, postgres_url: str, serve_processes: list[ServeProcess],
) -> None:
    config = write_config(tmp_path, postgres_url)
    server = start_serve(config)
    serve_processes.append(server)
    key = create_key(server.base_url, max_budget=CALL_COST * 19.5, budget_duration="30d")  # 20 calls
    headers = {"authorization": f"Bearer {key['key']}", "x-request-id": "same-id-every-time"}
    for _ in range(20):
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
    rows = await stored_rows(postgres_url, expect=20)
    assert len(rows) == 20 and {r["request_id"] for r in rows} == {"same-id-every-time"}
    assert len({r["usage_id"] for r in rows}) == 20
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0

    restarted = start_serve(config)  # in-process counters: seeded from the stored rows
    serve_processes.append(restarted)
    refused = httpx.post(f"{restarted.base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
    assert refused.status_code == 402, refused.text
    assert key_spend(restarted.base_url, key["id"]) == pytest.approx(20 * CALL_COST)


# ---- Redis loses a counter --------------------------------------------------------------


@pytest.mark.redis
async def test_a_budget_counter_lost_in_redis_is_rebuilt_from_the_store_before_the_next_admission(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: Any,
    serve_processes: list[ServeProcess],
) -> None:
    config = write_config(tmp_path, postgres_url, extra=redis_section(redis_url, redis_prefix))
    server = start_serve(config)
    serve_processes.append(server)
    key = create_key(server.base_url, max_budget=CALL_COST * 9.5, budget_duration="30d")  # 10 calls
    headers = {"authorization": f"Bearer {key['key']}"}
    url = f"{server.base_url}/v1/chat/completions"
    for _ in range(6):
        assert httpx.post(url, json=BODY, headers=headers, timeout=10).status_code == 200
    assert len(await stored_rows(postgres_url, expect=6)) == 6
    counters = [k async for k in redis_client.scan_iter(match=f"{redis_prefix}limits:spend:key:{key['id']}:*")]
    counters = [k for k in counters if not k.decode().endswith(("held", "held-until"))]
    assert len(counters) == 1
    await redis_client.delete(*counters)  # Redis restarted without persistence, or evicted the key

    answered = 6
    for _ in range(20):
        response = httpx.post(url, json=BODY, headers=headers, timeout=10)
        if response.status_code != 200:
            assert response.status_code == 402, response.text
            break
        answered += 1
    assert answered == 10
    assert key_spend(server.base_url, key["id"]) == pytest.approx(10 * CALL_COST)


# ---- budget at c=32 on a slow upstream, two replicas -----------------------------------------


SLOW = """    echo: false
    script:
      - text: "fine thanks"
        delay: 0.3
        usage: {input_tokens: 10, output_tokens: 10}
"""


@pytest.mark.redis
async def test_a_budget_at_c32_on_a_slow_upstream_across_two_replicas_is_overrun_by_at_most_one_call(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: Any,
    serve_processes: list[ServeProcess],
) -> None:
    # $100 per million tokens, 20 tokens: $0.002 a call; 25 calls in a $0.05 budget. The
    # call's most (10 input tokens estimated from 40 characters, max_tokens 10) is $0.002.
    config = write_config(tmp_path, postgres_url, script=SLOW, price=100, extra=redis_section(redis_url, redis_prefix))
    a, b = start_serve(config), start_serve(config)
    serve_processes += [a, b]
    budget, cost = 0.05, 0.002
    key = create_key(a.base_url, max_budget=budget, budget_duration="30d")
    body = {"model": "chat", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 40}]}
    headers = {"authorization": f"Bearer {key['key']}"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32), headers=headers) as http:
        gate = asyncio.Semaphore(32)

        async def call(i: int) -> int:
            async with gate:
                response = await http.post(f"{(a, b)[i % 2].base_url}/v1/chat/completions", json=body)
                return response.status_code

        codes = await asyncio.gather(*(call(i) for i in range(96)))
    answered = codes.count(200)
    assert set(codes) <= {200, 402}
    assert budget / cost - 5 <= answered <= budget / cost + 1  # at most one call's most over
    rows = await stored_rows(postgres_url, expect=answered)
    assert sum(r["cost_usd"] for r in rows) <= budget + cost + 1e-9


# ---- --workers 2 without Redis ----------------------------------------------------------------


async def test_two_workers_without_redis_share_one_rpm_limit_and_say_so(
    tmp_path: Path, postgres_url: str, serve_processes: list[ServeProcess],
) -> None:
    config = write_config(tmp_path, postgres_url)
    server = start_serve(config, extra=["--workers", "2"], ready_timeout=40)
    serve_processes.append(server)
    key = create_key(server.base_url, rpm=50)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20),
                                 headers={"authorization": f"Bearer {key['key']}"}) as http:
        codes = [r.status_code for r in await asyncio.gather(*(
            http.post(f"{server.base_url}/v1/chat/completions", json=BODY) for _ in range(150)))]
    assert codes.count(200) == 50  # per worker, each would have admitted 50
    assert codes.count(429) == 100
    assert server.output().count("shared by this machine's 2 workers") == 2  # each worker says so


# ---- streams the client drops -------------------------------------------------------------------


WORDS = " ".join(f"w{i:02d}" for i in range(30))
STREAMING = f"""    echo: false
    script:
      - text: "{WORDS}"
        chunk_delay: 0.03
"""


def read_stream(url: str, headers: dict[str, str], words: int, request_id: str) -> None:
    """Read the stream until ``words`` words of text arrived, then hang up."""
    body = {**BODY, "stream": True}
    seen = 0
    with httpx.stream("POST", url, json=body, headers={**headers, "x-request-id": request_id}, timeout=30) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line.removeprefix("data: "))["choices"]
            if choices and choices[0]["delta"].get("content"):
                seen += 1
                if seen >= words:
                    return


async def test_a_stream_dropped_whole_or_half_read_is_billed_for_what_was_relayed(
    tmp_path: Path, postgres_url: str, serve_processes: list[ServeProcess],
) -> None:
    config = write_config(tmp_path, postgres_url, script=STREAMING)
    server = start_serve(config)
    serve_processes.append(server)
    key = create_key(server.base_url)
    headers = {"authorization": f"Bearer {key['key']}"}
    url = f"{server.base_url}/v1/chat/completions"
    read_stream(url, headers, 30, "whole")  # the whole answer, then gone before the stream's end
    read_stream(url, headers, 15, "half")
    rows = {r["request_id"]: r for r in await stored_rows(postgres_url, expect=2)}
    whole, half = rows["whole"], rows["half"]
    assert whole["output_tokens"] == (len(WORDS) + 3) // 4  # every word relayed, counted
    assert whole["cost_usd"] > 0 and whole["status"] == "error:499"
    assert half["estimated"] and half["status"] == "error:499"
    assert 15 * 4 // 4 <= half["output_tokens"] < whole["output_tokens"]  # "w00 w01 ...": 4 characters a word
    assert half["input_tokens"] == 3 and half["cost_usd"] == pytest.approx(
        (half["input_tokens"] + half["output_tokens"]) * 10000 / 1e6)


# ---- streams cut by the shutdown timeout ----------------------------------------------------------


LONG = f"""    echo: false
    script:
      - text: "{" ".join(f"w{i:03d}" for i in range(200))}"
        chunk_delay: 0.05
"""


async def test_streams_cut_by_the_shutdown_timeout_end_with_an_error_event_and_are_billed(
    tmp_path: Path, postgres_url: str, serve_processes: list[ServeProcess],
) -> None:
    config = write_config(tmp_path, postgres_url, script=LONG, shutdown_timeout=2)
    server = start_serve(config)
    serve_processes.append(server)
    key = create_key(server.base_url)
    auth = {"authorization": f"Bearer {key['key']}"}
    tails: dict[str, list[str]] = {}
    started = threading.Barrier(5)

    def openai_stream(name: str) -> None:
        lines: list[str] = tails.setdefault(name, [])
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=30,
                          json={**BODY, "stream": True}, headers={**auth, "x-request-id": name}) as resp:
            for i, line in enumerate(resp.iter_lines()):
                if i == 2:
                    started.wait(10)
                if line:
                    lines.append(line)

    def anthropic_stream(name: str) -> None:
        lines: list[str] = tails.setdefault(name, [])
        with httpx.stream("POST", f"{server.base_url}/v1/messages", timeout=30,
                          json={**BODY, "stream": True, "max_tokens": 2000},
                          headers={"x-api-key": key["key"], "x-request-id": name}) as resp:
            for i, line in enumerate(resp.iter_lines()):
                if i == 6:
                    started.wait(10)
                if line:
                    lines.append(line)

    readers = [threading.Thread(target=openai_stream, args=(f"openai-{n}",)) for n in range(3)]
    readers.append(threading.Thread(target=anthropic_stream, args=("anthropic-0",)))
    for reader in readers:
        reader.start()
    started.wait(10)
    server.proc.send_signal(signal.SIGTERM)
    for reader in readers:
        reader.join(20)
    assert server.proc.wait(timeout=20) == 0
    output = server.output()
    assert "Traceback" not in output and "Cancel" not in output, output

    for n in range(3):
        last = json.loads(tails[f"openai-{n}"][-1].removeprefix("data: "))
        assert last["error"]["code"] == "server_shutting_down" and last["error"]["type"] == "server_error"
    assert tails["anthropic-0"][-2:][0] == "event: error"
    assert json.loads(tails["anthropic-0"][-1].removeprefix("data: "))["type"] == "error"

    rows = await stored_rows(postgres_url, expect=4)
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "error:503" and row["estimated"] and row["output_tokens"] > 10, row
        assert row["cost_usd"] > 0


# ---- background runs across kill -9, and their followers ------------------------------------------


RUN_CONFIG = """
version: 1
providers:
  script:
    type: scripted
    script:
      - tool_calls: [{{name: current_time, arguments: {{timezone: UTC}}}}]
        usage: {{input_tokens: 10, output_tokens: 5}}
      - text: "{answer}"
        chunk_delay: 0.1
        usage: {{input_tokens: 30, output_tokens: 20}}
models:
  scripted:
    provider: script
    model: scripted
pricing:
  scripted:
    input: 1000
    output: 1000
database:
  url: {database}
cache:
  url: {redis}
  prefix: "{prefix}"
runs:
  workers: ${{RUN_WORKERS:-1}}
  lease_seconds: 1
  poll_interval: 0.1
agents:
  assistant:
    model: scripted
    tools: [time]
"""
ANSWER = " ".join(f"a{i:02d}" for i in range(30))


async def sse(client: httpx.AsyncClient, url: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(id, event) of every server-sent event until the stream ends."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    entry_id: str | None = None
    async with client.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                entry_id = line[4:]
            elif line.startswith("data: "):
                out.append((entry_id, json.loads(line[6:])))
            elif not line:
                entry_id = None
    return out


@pytest.mark.redis
async def test_a_background_run_across_kill_9_loses_no_usage_row_and_its_follower_sees_the_takeover(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: Any,
    serve_processes: list[ServeProcess],
) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(RUN_CONFIG.format(answer=ANSWER, database=postgres_url, redis=redis_url, prefix=redis_prefix))
    a = start_serve(config)
    watcher = start_serve(config, env={"RUN_WORKERS": "0"})  # serves the follower, claims nothing
    serve_processes += [a, watcher]
    async with httpx.AsyncClient(timeout=30) as client:
        run = (await client.post(f"{a.base_url}/v1/agents/assistant/runs",
                                 json={"input": "what time is it?", "mode": "background"})).json()
        followed = asyncio.create_task(sse(client, f"{watcher.base_url}/v1/runs/{run['id']}/events"))
        deadline = time.monotonic() + 10
        while len(await redis_client.xrange(f"{redis_prefix}run:{run['id']}:events")) < 8:  # into the answer
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        kill_9(a)  # the tool call's usage row was queued, not yet stored
        b = start_serve(config)  # replays a's spool; takes the run over when its lease ends
        serve_processes.append(b)
        events = await asyncio.wait_for(followed, 20)

    kinds = [e["type"] for _, e in events]
    assert kinds[0] == "run.created" and kinds[-1] == "run.finished", kinds
    marker = kinds.index("run.attempt")
    assert events[marker] == ("2-0", {"type": "run.attempt", "run_id": run["id"], "attempt": 2,
                                      "previous_attempt": 1})
    assert all(i is not None and i.startswith("1-") for i, _ in events[1:marker])
    assert all(i is not None and i.startswith("2-") for i, _ in events[marker + 1:])
    assert events[-1][1]["output"] == ANSWER

    # a: the tool call (its answer was cut by the kill: never answered, not billed);
    # b: from the checkpoint, its script starts over: a tool call again, then the answer.
    rows = await stored_rows(postgres_url, expect=3)
    assert sorted((r["agent"], r["input_tokens"], r["output_tokens"]) for r in rows) == [
        ("assistant", 10, 5), ("assistant", 10, 5), ("assistant", 30, 20)]
    assert len({r["request_id"] for r in rows}) == 1  # the request that started the run, kept as metadata
    assert len({r["usage_id"] for r in rows}) == 3
