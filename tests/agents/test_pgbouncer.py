"""Background runs through a real PgBouncer in transaction mode: with ``?pooler=pgbouncer``
every one of 30 concurrent runs succeeds (without it most fail with ``prepared statement
... does not exist``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from corral.agents.service import AgentService
from corral.config.agents import RunsConfig
from corral.llm.types import Message
from corral.store import Store

pytestmark = pytest.mark.postgres
RUNS = 30


async def _run_all(harness: Any, url: str) -> dict[str, Any]:
    """Start RUNS background runs at once (each on a session of its own) and wait for them."""
    store = await Store.open(url, pool_size=RUNS)
    h = harness([], {"assistant": {"model": "scripted"}})
    svc = AgentService(h.registry, h.runner, store, RunsConfig(workers=RUNS, lease_seconds=5, poll_interval=0.05))
    outcomes: dict[str, Any] = {}
    try:
        await svc.start()
        started = await asyncio.gather(*(
            svc.start_run("assistant", [Message.text("user", f"run {i}")], session_id=f"s{i}", mode="background")
            for i in range(RUNS)), return_exceptions=True)
        for i, item in enumerate(started):
            if isinstance(item, BaseException):
                outcomes[f"s{i}"] = item
                continue
            record, _ = item
            for _ in range(400):
                done = await store.runs.get(record.id)
                if done is not None and done.state in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.025)
            messages = await store.sessions.messages(f"s{i}")
            outcomes[f"s{i}"] = (done.state if done else None, (done.output or {}).get("output") if done else None,
                                 [m.role for m in messages])
    finally:
        await svc.stop()
        await store.aclose()
    return outcomes


async def test_thirty_concurrent_runs_all_succeed_behind_pgbouncer(harness: Any, pgbouncer_url: str) -> None:
    outcomes = await _run_all(harness, pgbouncer_url + "?pooler=pgbouncer")
    assert outcomes == {f"s{i}": ("succeeded", f"You said: run {i}", ["user", "assistant"])
                        for i in range(RUNS)}



async def test_without_the_setting_pgbouncer_breaks_the_store(harness: Any, pgbouncer_url: str) -> None:
    """The control: the same runs without the setting fail as the issue reported, so the
    test above proves the setting and not a lenient PgBouncer."""
    with pytest.raises(DBAPIError, match=r"prepared statement \"__asyncpg_stmt_\w+__\" (does not exist|already exists)"):
        await _run_all(harness, pgbouncer_url)
