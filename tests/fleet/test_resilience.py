"""Disconnects between a real node and the supervisor, through a loopback TCP proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from corral.fleet.testing import TcpProxy, wait_until

from .conftest import Fleet


@pytest.fixture
async def proxied(fleet: Fleet) -> AsyncIterator[tuple[Fleet, TcpProxy]]:
    sup = await fleet.start_supervisor()
    proxy = TcpProxy(sup.ws_port)
    await proxy.start()
    try:
        yield fleet, proxy
    finally:
        await proxy.stop()


async def _stored(fleet: Fleet, node_id: str) -> list[int]:
    assert fleet.sup is not None
    rows = await fleet.sup.store.list_events(node_id=node_id, limit=10000)
    return [r["seq"] for r in rows]


async def test_offline_after_missed_heartbeats_then_back_with_sessions_on_reconnect(
        proxied: tuple[Fleet, TcpProxy]) -> None:
    fleet, proxy = proxied
    sup = fleet.sup
    assert sup is not None
    node = await fleet.start_node("n1", supervisor_url=f"ws://127.0.0.1:{proxy.port}", backoff_max_seconds=0.3)
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    sid = started["output"]["session_id"]
    await wait_until(lambda: sup.state.sessions[sid].state == "idle", 5, "idle session")

    proxy.pause()  # the network goes away; the node process lives on
    await wait_until(lambda: sup.state.nodes["n1"].status == "offline", 5, "node offline")
    assert sup.state.sessions[sid].state == "unreachable"
    limit = sup.config.server.heartbeat_interval_seconds * sup.config.server.heartbeat_missed_count
    assert limit == pytest.approx(0.6)

    async def stored_unreachable() -> bool:
        return {s["session_id"]: s["state"] for s in await sup.store.load_sessions()}[sid] == "unreachable"

    # the in-memory state turns first; its row is written just after, in the same liveness pass
    await wait_until(stored_unreachable, 5, "the stored session unreachable")

    proxy.resume()
    await wait_until(lambda: sup.state.nodes["n1"].status == "online" and node.connected.is_set(), 10,
                     "node back online")
    await wait_until(lambda: sup.state.sessions[sid].state == "idle", 5, "session reachable again")

    async def kinds() -> list[str]:
        return [e["type"] for e in await sup.store.list_events(node_id="supervisor", limit=100)]

    async def two_onlines() -> bool:
        return (await kinds()).count("node.online") == 2

    await wait_until(two_onlines, 5, "the second node.online event")
    assert (await kinds()) == ["node.online", "node.offline", "session.unreachable", "node.online"]


async def test_connection_cut_mid_frame_loses_and_duplicates_nothing(proxied: tuple[Fleet, TcpProxy]) -> None:
    fleet, proxy = proxied
    node = await fleet.start_node("n1", supervisor_url=f"ws://127.0.0.1:{proxy.port}", backoff_max_seconds=0.2,
                                  backends={"scripted": {"type": "native", "model": "scripted", "provider": {
                                      "type": "scripted", "script": [{"text": "ok", "delay": 0.02}]}}})
    started = await fleet.command("start", {"project": "demo"},
                                  {"project": "demo", "prompts": [f"p{i}" for i in range(40)]})
    assert started["status"] == "success"
    for n in range(1, 4):  # three cuts, each of a connection of its own (on a fast machine a cut
        # set before the node is back would wait for, and merge with, the next one)
        await wait_until(lambda n=n: proxy.connections == n and not proxy.cut_pending, 10, f"connection {n}")
        await asyncio.sleep(0.05)
        proxy.cut(mid_frame=True)
    await wait_until(lambda: proxy.connections == 4, 10, "the node back after the third cut")
    expected = 1 + 40 * 4  # session.started, then running/message/usage/idle per prompt
    await wait_until(lambda: node.outbox.next_seq - 1 == expected and not node.outbox.pending, 20,
                     "every event acknowledged")
    seqs = await _stored(fleet, "n1")
    assert sorted(seqs) == list(range(1, expected + 1))  # each exactly once
    assert proxy.connections == 4
    assert fleet.sup is not None and fleet.sup.pipeline.duplicates_total >= 0
    session = fleet.sup.state.sessions[started["output"]["session_id"]]
    usage = [e for e in await fleet.sup.store.list_events(node_id="n1", type_prefix="usage", limit=1000)]
    assert len(usage) == 40 and session.input_tokens == sum(e["input_tokens"] for e in usage)


async def test_node_restart_resends_its_outbox_and_reports_its_sessions(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor()
    node = await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    sid = started["output"]["session_id"]
    await wait_until(lambda: not node.outbox.pending, 5, "acks")
    await fleet.stop_node(node)
    # events written while disconnected wait in the outbox file for the next run
    from corral.fleet.node.outbox import Outbox

    box = Outbox(node.outbox.path)
    await box.open()
    await box.append({"type": "session.note", "session_id": sid, "data": {"n": 1}})
    await box.close()
    restarted = await fleet.start_node("n1")
    await wait_until(lambda: not restarted.outbox.pending, 5, "resend acknowledged")
    notes = await sup.store.list_events(node_id="n1", type_prefix="session.note")
    assert [n["data"] for n in notes] == [{"n": 1}]
    assert sid in restarted.sessions.sessions and sup.state.sessions[sid].state == "idle"
    resumed = await fleet.command("resume", {"session_id": sid}, {"wait": True})
    assert resumed["status"] == "success" and resumed["output"]["reply"] == "You said: continue"
