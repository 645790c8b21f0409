"""`AgentService` on a real store (SQLite and Postgres): the queue, checkpoints,
hand-back on shutdown, and cancellation across replicas."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.agents.service import AgentService
from corral.config.agents import RunsConfig
from corral.config.schema import ScriptStep
from corral.llm.types import Message
from corral.store import Store

RUNS = RunsConfig(workers=1, lease_seconds=1, poll_interval=0.05)


def service(harness: Any, store: Store, steps: list[ScriptStep], **agent: Any) -> AgentService:
    h = harness(steps, {"assistant": {"model": "scripted", **agent}})
    return AgentService(h.registry, h.runner, store, RUNS)


async def until(store: Store, run_id: str, states: set[str]) -> Any:
    for _ in range(200):
        record = await store.runs.get(run_id)
        if record is not None and record.state in states:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never reached {states}: {record}")


async def test_background_run_is_claimed_and_its_session_saved(harness, database_url: str) -> None:
    store = await Store.open(database_url)
    steps = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="done")]
    svc = service(harness, store, steps, tools=["time"])
    try:
        await svc.start()
        record, live = await svc.start_run("assistant", [Message.text("user", "hi")], session_id="s1",
                                           mode="background", variables={"name": "Ada"})
        done = await until(store, record.id, {"succeeded", "failed"})
        messages = await store.sessions.messages("s1")
        session = await store.sessions.get("s1")
    finally:
        await svc.stop()
        await store.aclose()
    assert live is None and done.state == "succeeded" and done.output["output"] == "done"
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert all(m.run_id == record.id for m in messages)
    assert session is not None and session.metadata["variables"] == {"name": "Ada"}


async def test_shutdown_hands_a_running_background_run_back_and_another_service_resumes_it(
        harness, database_url: str) -> None:
    store = await Store.open(database_url)
    slow = [ScriptStep(tool_calls=[{"name": "current_time", "arguments": {}}]), ScriptStep(text="late", delay=30)]
    first = service(harness, store, slow, tools=["time"])
    try:
        await first.start()
        record, _ = await first.start_run("assistant", [Message.text("user", "hi")], mode="background")
        for _ in range(200):  # wait for the checkpoint after the tool result
            current = await store.runs.get(record.id)
            if current is not None and current.input.get("checkpoint", {}).get("messages", [])[2:]:
                break
            await asyncio.sleep(0.05)
        await first.stop()
        handed_back = await store.runs.get(record.id)
        second = service(harness, store, [ScriptStep(text="resumed")], tools=["time"])
        await second.start()
        done = await until(store, record.id, {"succeeded", "failed"})
        await second.stop()
    finally:
        await store.aclose()
    assert handed_back is not None and handed_back.state == "queued" and handed_back.claimed_by is None
    assert done.state == "succeeded" and done.output["output"] == "resumed" and done.attempts == 2


async def test_cancel_from_another_replica_stops_the_run_where_it_runs(harness, database_url: str) -> None:
    store = await Store.open(database_url)
    runner = service(harness, store, [ScriptStep(text="never", delay=30)])
    other = service(harness, store, [])
    try:
        await runner.start()
        record, _ = await runner.start_run("assistant", [Message.text("user", "hi")], mode="background")
        await until(store, record.id, {"running"})
        for _ in range(100):
            if record.id in runner.live:
                break
            await asyncio.sleep(0.05)
        cancelled = await other.cancel(record.id)
        for _ in range(100):  # the heartbeat (every lease/3 s) notices and stops the local task
            if record.id not in runner.live:
                break
            await asyncio.sleep(0.05)
        still_running = record.id in runner.live
    finally:
        await runner.stop()
        await other.stop()
        await store.aclose()
    assert cancelled.state == "cancelled"
    assert not still_running


async def test_no_background_workers_poll_the_store_when_no_agent_is_configured(tmp_path) -> None:
    from corral.config.schema import CorralConfig
    from corral.gateway.app import create_app

    config = CorralConfig.model_validate({
        "providers": {"s": {"type": "scripted"}}, "models": {"m": {"provider": "s", "model": "x"}},
        "database": {"url": f"sqlite:///{tmp_path / 'c.db'}"}, "verification": {"enabled": False}})
    gateway = create_app(config).state.gateway
    await gateway.start()
    try:
        service = gateway.agents.service
        assert service._workers == []
    finally:
        await gateway.stop()
