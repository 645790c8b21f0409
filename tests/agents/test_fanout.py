"""Run events fanned out through a real Redis: exact ids, writes kept through an outage,
followers across a hand-back to another replica, and a follower of a run whose executor
died without its last events."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from corral.agents.events import RunFinished, TextOutput
from corral.agents.fanout import RedisRunEvents
from corral.agents.service import AgentService
from corral.config.agents import RunsConfig
from corral.config.schema import ScriptStep
from corral.llm.types import Message
from corral.store import RunRecord, Store
from corral.testing.server import free_port

pytestmark = pytest.mark.redis

RUNS = RunsConfig(workers=1, lease_seconds=1, poll_interval=0.05)


async def stored(client: Any, key: str, count: int) -> list[tuple[bytes, bytes]]:
    for _ in range(200):
        entries = await client.xrange(key)
        if len(entries) >= count:
            return [(entry_id, fields[b"e"]) for entry_id, fields in entries]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key}: {await client.xrange(key)}")


async def test_events_queued_while_redis_is_down_are_written_in_order_once_it_is_back(
    redis_url: str, redis_prefix: str, redis_client: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="corral.agents")
    fanout = RedisRunEvents(aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0"), prefix=redis_prefix,
                            retry_seconds=0.05)
    down = fanout.client
    for seq, word in enumerate(["a", "b", "c"], 1):
        fanout.publish("run_x", 1, seq, TextOutput(word))
    for _ in range(100):
        if any("run events are not reaching Redis" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    fanout.client = aioredis.from_url(redis_url)  # Redis is back
    await down.aclose()
    fanout.publish("run_x", 1, 4, TextOutput("d"))
    entries = await stored(redis_client, fanout.key("run_x"), 4)
    fanout.publish("run_x", 1, 2, TextOutput("b again"))  # a retried write: refused, not stored twice
    fanout.publish("run_x", 1, 5, RunFinished("completed", output="abcd"))
    entries = await stored(redis_client, fanout.key("run_x"), 5)
    await fanout.aclose()

    assert [e[0] for e in entries] == [b"1-1", b"1-2", b"1-3", b"1-4", b"1-5"]
    assert [e[1] for e in entries][:4] == [b'{"text":"%s","agent":"","type":"text.delta"}' % w for w in (b"a", b"b", b"c", b"d")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 events kept" in warnings[0].getMessage()


async def test_a_follower_keeps_streaming_across_a_hand_back_to_another_replica(
    harness: Any, tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: Any,
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'corral.db'}")

    def replica(steps: list[ScriptStep], workers: int = 1) -> AgentService:
        h = harness(steps, {"assistant": {"model": "scripted", "tools": ["time"]}})
        fanout = RedisRunEvents(aioredis.from_url(redis_url), prefix=redis_prefix, block_ms=100)
        return AgentService(h.registry, h.runner, store, RunsConfig(**{**RUNS.model_dump(), "workers": workers}),
                            fanout=fanout)

    first = replica([ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]),
                     ScriptStep(text="never", delay=30)])
    second = replica([ScriptStep(text="resumed elsewhere")])
    watcher = replica([], workers=0)  # a replica that only serves followers
    try:
        await first.start()
        record, _ = await first.start_run("assistant", [Message.text("user", "hi")], mode="background")
        for _ in range(200):  # running on `first`, past its checkpoint
            record = await first.get(record.id)
            if record.state == "running" and record.input.get("checkpoint"):
                break
            await asyncio.sleep(0.02)
        followed = asyncio.create_task(_collect(watcher, record))
        await stored(redis_client, watcher.fanout.key(record.id), 3)  # type: ignore[union-attr]
        await first.stop()  # hands the run back to the queue...
        await second.start()  # ...and another replica takes it over from its checkpoint
        events = await asyncio.wait_for(followed, 10)
    finally:
        for svc in (first, second, watcher):
            await svc.stop()
            assert svc.fanout is not None
            await svc.fanout.aclose()
        await store.aclose()

    # attempt 1, on `first`; the takeover marked; attempt 2, on `second`
    assert [e["type"] for _, e in events] == ["usage", "tool.call", "tool.result", "run.attempt",
                                              "text.delta", "text.delta", "usage", "run.finished"]
    assert events[3][1] == {"type": "run.attempt", "run_id": record.id, "attempt": 2, "previous_attempt": 1}
    assert events[-1][1]["output"] == "resumed elsewhere"
    assert [i for i, _ in events] == ["1-1", "1-2", "1-3", "2-0", "2-1", "2-2", "2-3", "2-4"]  # the SSE ids
    ids = [entry_id for entry_id, _ in await redis_client.xrange(f"{redis_prefix}run:{record.id}:events")]
    assert ids == [b"1-1", b"1-2", b"1-3", b"2-1", b"2-2", b"2-3", b"2-4"]


async def test_a_follower_ends_when_the_run_is_over_in_the_store_without_its_last_events(
    harness: Any, tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: Any,
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'corral.db'}")
    h = harness([], {"assistant": {"model": "scripted"}})
    fanout = RedisRunEvents(aioredis.from_url(redis_url), prefix=redis_prefix, block_ms=100)
    watcher = AgentService(h.registry, h.runner, store, RunsConfig(workers=0), fanout=fanout)
    try:
        record = await store.runs.enqueue(RunRecord("run_dead", "assistant", "running", attempts=1,
                                                    claimed_by="gone", input={"mode": "foreground"}))
        fanout.publish(record.id, 1, 1, TextOutput("half an ans"))  # then the executor died
        followed = asyncio.create_task(_collect(watcher, record))
        await stored(redis_client, fanout.key(record.id), 1)
        await asyncio.sleep(0.3)
        assert not followed.done()  # still running in the store: the follower waits
        await store.runs.finish(record.id, "failed", error="interrupted")  # another worker's verdict
        events = await asyncio.wait_for(followed, 5)
    finally:
        await fanout.aclose()
        await store.aclose()
    assert events == [("1-1", {"text": "half an ans", "agent": "", "type": "text.delta"})]


async def _collect(service: AgentService, record: RunRecord) -> list[tuple[str, dict[str, Any]]]:
    return [event async for event in service.follow(record)]
