"""`events` frames (several events in one frame) between nodes and a real supervisor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from corral.fleet.node.client import Node, outbox_path
from corral.fleet.node.outbox import Outbox
from corral.fleet.protocol import MAX_BATCH_EVENTS, Envelope, batch_frames, decode, encode
from corral.fleet.testing import SimulatedNode, wait_until

from .conftest import TOKEN, Fleet, node_config

LIMIT = 1024 * 1024  # the default max_frame_bytes


def _event(seq: int, **payload: Any) -> dict[str, Any]:
    body = {"type": "session.output", "session_id": "s1", "data": {"n": seq}, **payload}
    frame: dict[str, Any] = orjson.loads(encode(Envelope(type="event", seq=seq, payload=body)))
    return frame


def _batch(entries: list[Any]) -> str:
    return encode(Envelope(type="events", payload={"events": entries}))


async def _stored(fleet: Fleet, node_id: str) -> list[int]:
    assert fleet.sup is not None
    return [r["seq"] for r in await fleet.sup.store.list_events(node_id=node_id, limit=10000)]


@pytest.fixture
async def sim(fleet: Fleet) -> AsyncIterator[SimulatedNode]:
    await fleet.start_supervisor()
    node = SimulatedNode(fleet.ws_url, TOKEN, "sim")
    registered = await node.connect()
    assert registered["max_batch_events"] == MAX_BATCH_EVENTS and registered["max_frame_bytes"] == LIMIT
    try:
        yield node
    finally:
        await node.close()


async def test_a_batch_with_invalid_entries_stores_and_acks_the_valid_ones_and_names_the_others(
        fleet: Fleet, sim: SimulatedNode) -> None:
    bad_type = _event(2, type="")
    no_seq = {**_event(4), "seq": None}
    await sim.send_raw(_batch([_event(1), bad_type, _event(3), no_seq, _event(5)]))
    await wait_until(lambda: sim.acked == {1, 3, 5} and len(sim.errors) == 2, 5, "acks and errors")
    assert await _stored(fleet, "sim") == [1, 3, 5]
    assert [(e["code"], e["ref"]) for e in sim.errors] == [("invalid_payload", bad_type["id"]),
                                                           ("invalid_envelope", no_seq["id"])]
    assert sim.errors[0]["message"].startswith("events[1] (seq 2): event payload: type:")
    assert sim.errors[1]["message"] == "events[3]: event frames need seq >= 1"
    # the node fixes and resends what was refused, with what was stored already: each stored once
    await sim.send_raw(_batch([_event(1), _event(2), _event(3), _event(4), _event(5)]))
    await wait_until(lambda: sim.acked == {1, 2, 3, 4, 5}, 5, "the resend acknowledged")
    assert await _stored(fleet, "sim") == [1, 3, 5, 2, 4]
    assert fleet.sup is not None and fleet.sup.pipeline.duplicates_total == 3
    assert fleet.sup.state.sessions["s1"].node_id == "sim"


async def test_an_oversized_batch_is_refused_whole_and_nothing_of_it_stored(
        fleet: Fleet, sim: SimulatedNode) -> None:
    events = [_event(seq, data={"pad": "x" * 30_000}) for seq in range(1, 41)]  # 1.2 MB in all
    await sim.send_raw(_batch(events))
    await wait_until(lambda: len(sim.errors) == 1, 5, "frame_too_large")
    many = [_event(seq) for seq in range(41, 41 + MAX_BATCH_EVENTS + 1)]  # small, but one too many
    await sim.send_raw(_batch(many))
    await wait_until(lambda: len(sim.errors) == 2, 5, "batch_too_large")
    assert [e["code"] for e in sim.errors] == ["frame_too_large", "batch_too_large"]
    await sim.heartbeat()  # the connection is still open
    await asyncio.sleep(0.05)
    assert await _stored(fleet, "sim") == [] and not sim.acked
    # split within the limits, as a node does, every event arrives: nothing lost
    pending = [(e["seq"], orjson.dumps(e).decode()) for e in events + many]
    frames = batch_frames(pending, max_events=MAX_BATCH_EVENTS, max_bytes=LIMIT)
    assert len(frames) == 3
    for _, frame in frames:
        await sim.send_raw(frame)
    await wait_until(lambda: len(sim.acked) == len(pending), 10, "every event acknowledged")
    assert sorted(await _stored(fleet, "sim")) == list(range(1, 42 + MAX_BATCH_EVENTS))
    assert len(sim.errors) == 2


async def test_a_node_sends_its_backlog_in_events_frames_within_the_supervisors_limits(
        fleet: Fleet, tmp_path: Path) -> None:
    sup = await fleet.start_supervisor(server={"max_frame_bytes": 4096})
    kinds: list[tuple[str, int]] = []
    handle = sup.hub._on_frame

    async def spy(conn: Any, raw: str | bytes) -> None:
        kinds.append((decode(raw, max_bytes=1 << 20).type, len(raw)))
        await handle(conn, raw)

    sup.hub._on_frame = spy  # type: ignore[method-assign]
    box = Outbox(outbox_path(node_config(tmp_path, fleet.ws_url, "n1")))
    await box.open()
    for n in range(60):  # written while the supervisor was away
        await box.append({"type": "session.note", "session_id": "s1", "data": {"n": n, "text": "y" * 100}})
    await box.close()
    node = await fleet.start_node("n1")
    assert (node.batch_events, node.frame_bytes) == (MAX_BATCH_EVENTS, 4096)
    await wait_until(lambda: not node.outbox.pending, 10, "the backlog acknowledged")
    assert sorted(await _stored(fleet, "n1")) == list(range(1, 61))
    batches = [size for kind, size in kinds if kind == "events"]
    assert 2 <= len(batches) <= 10 and max(batches) <= 4096
    assert [k for k, _ in kinds].count("event") <= 1  # only a last group of one goes as a plain event


async def test_a_node_sends_one_event_per_frame_to_a_supervisor_without_events_frames(tmp_path: Path) -> None:
    """A supervisor from before `events` frames: `registered` has no max_batch_events."""
    received: list[str] = []

    async def old_supervisor(ws: ServerConnection) -> None:
        async for raw in ws:
            env = decode(raw)
            received.append(env.type)
            if env.type == "register":
                await ws.send(encode(Envelope(type="registered", payload={
                    "node_id": "n1", "heartbeat_interval_seconds": 5, "max_frame_bytes": 1 << 20})))
            elif env.type == "event":
                await ws.send(encode(Envelope(type="ack", payload={"seqs": [env.seq]})))

    async with serve(old_supervisor, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        config = node_config(tmp_path, f"ws://127.0.0.1:{port}", "n1")
        box = Outbox(outbox_path(config))
        await box.open()
        for n in range(5):
            await box.append({"type": "session.note", "session_id": "s1", "data": {"n": n}})
        await box.close()
        node = Node(config, TOKEN)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        try:
            await wait_until(lambda: node.connected.is_set() and not node.outbox.pending, 10, "acks")
            assert node.batch_events == 1
            assert received == ["register"] + ["event"] * 5
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
