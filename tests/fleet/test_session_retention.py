"""Finished sessions leave the supervisor's memory (a retention and a bound) and stay
answerable from the store: the HTTP API, `corral ctl`, and their totals when a late event
arrives for one."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from websockets.asyncio.client import connect

from corral.fleet.protocol import Envelope, decode, encode
from corral.fleet.store import FleetStore
from corral.fleet.supervisor.state import FleetState
from corral.fleet.testing import SimulatedNode, free_port, wait_until

from .conftest import TOKEN, Fleet

SESSIONS = 10
BOUND = 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _finish(state: FleetState, session_id: str, ts: float = 1.0) -> None:
    state.apply_event("n1", "session.started", session_id, {}, (5, 1), 0.0, ts)
    state.apply_event("n1", "session.completed", session_id, {}, (0, 0), 0.0, ts)


def test_finished_sessions_leave_memory_after_the_retention() -> None:
    clock = Clock()
    state = FleetState(finished_retention=60, max_finished=100, clock=clock)
    _finish(state, "old")
    clock.now += 30
    _finish(state, "new")
    state.apply_event("n1", "session.started", "live", {}, (1, 1), 0.0, 1.0)
    assert state.evict() == []
    clock.now += 31  # "old" finished 61 s ago, "new" 31 s ago
    assert state.evict() == ["old"]
    assert set(state.sessions) == {"new", "live"}
    clock.now += 3600
    assert state.evict() == ["new"]
    assert set(state.sessions) == {"live"}  # a session that can still change is never evicted
    assert state.evicted_total == 2


def test_at_most_the_bound_of_finished_sessions_stays_and_the_oldest_go_first() -> None:
    state = FleetState(finished_retention=3600, max_finished=BOUND, clock=Clock())
    for i in range(SESSIONS):
        _finish(state, f"s-{i}")
    assert state.evict() == [f"s-{i}" for i in range(SESSIONS - BOUND)]
    assert sorted(state.sessions) == [f"s-{i}" for i in range(SESSIONS - BOUND, SESSIONS)]
    assert state.finished_in_memory == BOUND


def test_a_resumed_session_is_no_longer_finished() -> None:
    clock = Clock()
    state = FleetState(finished_retention=10, max_finished=100, clock=clock)
    _finish(state, "s")
    state.apply_event("n1", "session.running", "s", {}, (0, 0), 0.0, 2.0)
    clock.now += 60
    assert state.evict() == [] and "s" in state.sessions


def test_a_restarted_supervisor_loads_the_live_sessions_and_the_newest_finished_ones() -> None:
    def row(sid: str, state: str, last: float) -> dict[str, Any]:
        return {"session_id": sid, "node_id": "n1", "project": None, "backend": None, "model": None,
                "state": state, "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "compactions": 0,
                "created_at": last, "last_activity": last}

    rows = [row(f"done-{i}", "completed", float(i)) for i in range(SESSIONS)] + [row("live", "running", 1.0)]
    state = FleetState(max_finished=BOUND)
    state.load([], rows)
    assert sorted(state.sessions) == ["done-7", "done-8", "done-9", "live"]
    assert state.sessions["live"].state == "unreachable"


async def _ctl(http_port: int, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corral", "ctl", "--supervisor-url", f"http://127.0.0.1:{http_port}", "--token", TOKEN,
        "--format", "json", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.mark.parametrize("retention", [3600.0, 0.0])
async def test_evicted_sessions_are_answered_from_the_store(fleet: Fleet, retention: float) -> None:
    sup = await fleet.start_supervisor(
        server={"http_port": free_port()},
        sessions={"finished_retention_seconds": retention, "max_finished_in_memory": BOUND})
    assert fleet.api is not None
    sim = SimulatedNode(fleet.ws_url, TOKEN, "sim")
    await sim.connect()
    for i in range(SESSIONS):
        await sim.event("session.started", f"s-{i}", {"model": "m"})
        await sim.event("usage", f"s-{i}", {"input_tokens": 100 + i, "output_tokens": 10, "cost_usd": 0.5})
        await sim.event("session.completed", f"s-{i}")
    await sim.event("session.started", "still-running")
    await wait_until(lambda: len(sim.acked) == sim.seq, 10, "every event stored")

    kept = BOUND if retention else 0
    finished = [s for s in sup.state.sessions.values() if s.state == "completed"]
    assert len(finished) == sup.state.finished_in_memory == kept
    assert sup.state.evicted_total == SESSIONS - kept
    assert "s-0" not in sup.state.sessions and "still-running" in sup.state.sessions

    one = await fleet.api.get("/api/v1/sessions/s-0")
    assert one.status_code == 200
    assert {k: one.json()["data"][k] for k in ("state", "node_id", "model", "input_tokens", "cost_usd")} == {
        "state": "completed", "node_id": "sim", "model": "m", "input_tokens": 100, "cost_usd": 0.5}
    assert (await fleet.api.get("/api/v1/sessions/never-was")).status_code == 404

    listed = (await fleet.api.get("/api/v1/sessions")).json()
    assert [r["session_id"] for r in listed["data"]] == [f"s-{i}" for i in range(SESSIONS)] + ["still-running"]
    assert listed["meta"]["total"] == SESSIONS + 1
    completed = (await fleet.api.get("/api/v1/sessions", params={"state": "completed", "limit": 4})).json()
    assert [r["session_id"] for r in completed["data"]] == ["s-0", "s-1", "s-2", "s-3"]
    assert completed["meta"]["total"] == SESSIONS
    node = (await fleet.api.get("/api/v1/nodes/sim")).json()["data"]
    assert len(node["sessions"]) == SESSIONS + 1

    # a late event for an evicted session: its totals go on from the stored ones
    await sim.event("usage", "s-0", {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.25})
    await wait_until(lambda: len(sim.acked) == sim.seq, 10, "the late event stored")
    again = (await fleet.api.get("/api/v1/sessions/s-0")).json()["data"]
    assert (again["input_tokens"], again["output_tokens"], again["cost_usd"]) == (101, 11, 0.75)
    assert sup.state.finished_in_memory == kept

    rows = await _ctl(sup.http_port, "sessions", "list", "--state", "completed")
    assert sorted(r["session_id"] for r in rows) == sorted(f"s-{i}" for i in range(SESSIONS))
    shown = await _ctl(sup.http_port, "sessions", "get", "s-1")
    assert (shown["session_id"], shown["input_tokens"]) == ("s-1", 101)
    await sim.close()


async def test_a_command_can_target_an_evicted_session(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(sessions={"finished_retention_seconds": 0})
    sim = SimulatedNode(fleet.ws_url, TOKEN, "sim")
    await sim.connect()
    await sim.event("session.started", "gone")
    await sim.event("session.completed", "gone")
    await wait_until(lambda: len(sim.acked) == sim.seq, 10, "events stored")
    assert "gone" not in sup.state.sessions
    result = await fleet.command("resume", {"session_id": "gone"}, {"message": "again"})
    assert result["status"] == "success" and result["node_id"] == "sim"
    assert sim.commands[-1]["args"]["session_id"] == "gone"
    await sim.close()


async def test_a_node_reporting_an_evicted_session_keeps_its_totals(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(sessions={"finished_retention_seconds": 0})
    sim = SimulatedNode(fleet.ws_url, TOKEN, "sim")
    await sim.connect()
    await sim.event("usage", "back", {"input_tokens": 40, "output_tokens": 2, "cost_usd": 0.1})
    await sim.event("session.completed", "back")
    await wait_until(lambda: len(sim.acked) == sim.seq, 10, "events stored")
    assert "back" not in sup.state.sessions
    await sim.close()
    # the node comes back still holding the session (it ended on our side, not on its own)
    async with connect(fleet.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send(encode(Envelope(type="register", payload={
            "node_id": "sim", "hostname": "sim", "version": "sim", "backends": ["sim"], "projects": [],
            "sessions": [{"session_id": "back", "state": "idle"}]})))
        assert decode(await asyncio.wait_for(ws.recv(), 10)).type == "registered"
        session = sup.state.sessions["back"]
        assert (session.state, session.input_tokens, session.cost_usd) == ("idle", 40, 0.1)
        stored = await sup.store.get_sessions(["back"])
        assert (stored[0]["state"], stored[0]["input_tokens"]) == ("idle", 40)


async def test_get_sessions_reads_only_the_asked_rows(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor()
    store: FleetStore = sup.store
    await store.upsert_sessions([{"session_id": f"x-{i}", "node_id": "n", "project": "p", "backend": None,
                                  "model": None, "state": "completed", "input_tokens": i, "output_tokens": 0,
                                  "cost_usd": 0.0, "compactions": 0, "created_at": float(i),
                                  "last_activity": float(i)} for i in range(5)])
    assert sorted(r["session_id"] for r in await store.get_sessions(["x-1", "x-3", "nope"])) == ["x-1", "x-3"]
    rows, total = await store.list_sessions(project="p", limit=2)
    assert ([r["session_id"] for r in rows], total) == (["x-0", "x-1"], 5)
