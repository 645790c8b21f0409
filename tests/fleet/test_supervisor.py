"""An in-process supervisor with in-process nodes: registry, commands, API, frames, auth."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from corral.fleet.protocol import decode
from corral.fleet.testing import SimulatedNode, wait_until

from .conftest import TOKEN, Fleet


async def test_node_registers_and_the_api_lists_it_online(fleet: Fleet) -> None:
    await fleet.start_supervisor()
    await fleet.start_node("n1")
    assert fleet.api is not None
    nodes = (await fleet.api.get("/api/v1/nodes")).json()["data"]
    assert [(n["node_id"], n["status"], n["projects"], n["backends"]) for n in nodes] == [
        ("n1", "online", ["demo"], ["scripted"])]
    assert (await fleet.api.get("/api/v1/nodes/n1")).json()["data"]["sessions"] == []
    assert (await fleet.api.get("/api/v1/nodes/zz")).status_code == 404


async def test_api_requires_the_token_but_health_does_not(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor()
    from corral.fleet.supervisor.http import build_http_app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_http_app(sup)), base_url="http://x") as c:
        denied = await c.get("/api/v1/nodes", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        assert (await c.get("/api/v1/sessions")).status_code == 401
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"store": True, "hub": True}
        metrics = (await c.get("/metrics")).text
        assert "corral_fleet_nodes" in metrics and "corral_fleet_events_stored_total" in metrics


async def test_start_and_prompt_run_turns_and_store_their_events(fleet: Fleet) -> None:
    await fleet.start_supervisor(cost={"pricing": {"scripted": {"input": 1000.0, "output": 2000.0}}})
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    assert started["status"] == "success" and started["node_id"] == "n1"
    sid = started["output"]["session_id"]
    assert started["output"]["reply"] == "You said: hi"
    prompted = await fleet.command("prompt", {"session_id": sid}, {"message": "again", "wait": True})
    assert prompted["output"]["reply"] == "You said: again"
    assert fleet.api is not None and fleet.sup is not None

    async def settled() -> bool:
        # Both turns' events stored: the prompt's reply can arrive before its events do.
        stored = (await fleet.api.get("/api/v1/events", params={"session_id": sid})).json()["data"]  # type: ignore[union-attr]
        s = fleet.sup.state.sessions.get(sid)  # type: ignore[union-attr]
        return len(stored) >= 9 and s is not None and s.state == "idle" and fleet.sup.pipeline.backlog == 0  # type: ignore[union-attr]

    await wait_until(settled, 5, "both turns stored, session idle")
    session = (await fleet.api.get(f"/api/v1/sessions/{sid}")).json()["data"]
    events = (await fleet.api.get("/api/v1/events", params={"session_id": sid})).json()["data"]
    kinds = [e["type"] for e in events]
    assert kinds == ["session.started"] + ["session.running", "session.message", "usage", "session.idle"] * 2
    usage = [e for e in events if e["type"] == "usage"]
    assert session["input_tokens"] == sum(e["input_tokens"] for e in usage) > 0
    expected = sum(e["input_tokens"] * 1000 + e["output_tokens"] * 2000 for e in usage) / 1e6
    assert session["cost_usd"] == pytest.approx(expected)
    report = (await fleet.api.get("/api/v1/cost/today")).json()["data"]
    assert report["by_session"][sid]["cost_usd"] == pytest.approx(expected)
    assert report["by_node"]["n1"]["cost_usd"] == pytest.approx(expected)
    assert (await fleet.api.get("/api/v1/cost/year")).status_code == 400
    audit = (await fleet.api.get("/api/v1/audit")).json()["data"]
    assert [a["action"] for a in audit][:2] == ["command.prompt", "command.start"]


async def test_idempotency_key_runs_a_command_once(fleet: Fleet) -> None:
    await fleet.start_supervisor()
    await fleet.start_node("n1")
    first, second = await asyncio.gather(
        fleet.command("start", {"project": "demo"}, idempotency_key="once-1"),
        fleet.command("start", {"project": "demo"}, idempotency_key="once-1"))
    assert first["command_id"] == second["command_id"]
    assert first["output"]["session_id"] == second["output"]["session_id"]
    assert fleet.sup is not None
    await wait_until(lambda: len(fleet.sup.state.sessions) == 1, 3, "one session")  # type: ignore[union-attr]
    await asyncio.sleep(0.2)
    assert len(fleet.sup.state.sessions) == 1


async def test_commands_time_out_and_unknown_targets_are_clear_errors(fleet: Fleet) -> None:
    await fleet.start_supervisor()
    await fleet.start_node("n1", backends={"scripted": {
        "type": "native", "model": "scripted",
        "provider": {"type": "scripted", "script": [{"text": "slow", "delay": 3}]}}})
    started = await fleet.command("start", {"project": "demo"})
    sid = started["output"]["session_id"]
    timed = await fleet.command("prompt", {"session_id": sid}, {"message": "x", "wait": True}, timeout=0.3)
    assert timed["status"] == "timeout" and "0.3" in timed["error"]
    assert fleet.api is not None
    missing = await fleet.api.post("/api/v1/commands", json={"type": "kill", "target": {"session_id": "nope"}})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_session"
    bad = await fleet.api.post("/api/v1/commands", json={"type": "explode", "target": {"node_id": "n1"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_command"
    no_project = await fleet.api.post("/api/v1/commands", json={"type": "start", "target": {"project": "other"}})
    assert no_project.status_code == 409


async def test_invalid_frames_get_error_frames_and_the_connection_survives(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(server={"max_frame_bytes": 4096})
    sim = SimulatedNode(fleet.ws_url, TOKEN, "sim-1")
    await sim.connect()
    await sim.send_raw("{not json")
    await sim.send_raw(orjson.dumps({"v": 1, "type": "warp", "id": "w1", "ts": 1.0, "payload": {}}).decode())
    await sim.send_raw(orjson.dumps({"v": 1, "type": "command", "id": "c1", "ts": 1.0,
                                     "payload": {"command_id": "x", "type": "kill"}}).decode())
    await sim.event("usage", "s1", {"pad": "x" * 5000})  # over the limit, under the hard cap
    seq = await sim.event("session.idle", "s1")
    await wait_until(lambda: len(sim.errors) == 4 and seq in sim.acked, 5, "errors and an ack")
    assert [e["code"] for e in sim.errors] == ["invalid_json", "unknown_type", "unexpected_type",
                                               "frame_too_large"]
    assert sim.errors[1]["ref"] == "w1"
    # far past the hard cap: the socket is closed (1009), the supervisor carries on
    await sim.send_raw("x" * (4096 * 4 + 10))
    assert sim.ws is not None
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(50):
            await sim.heartbeat()
            await asyncio.sleep(0.02)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    again = SimulatedNode(fleet.ws_url, TOKEN, "sim-2")
    await again.connect()
    await again.close()
    assert sup.hub.listening and sup.hub.rejected["frame_too_large"] == 1


async def test_first_frame_must_be_register(fleet: Fleet) -> None:
    await fleet.start_supervisor()
    async with connect(fleet.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send(orjson.dumps({"v": 1, "type": "heartbeat", "id": "h", "ts": 1.0, "payload": {}}).decode())
        reply = decode(await ws.recv())
        assert reply.type == "error" and reply.payload["code"] == "register_first"


async def test_wrong_token_and_foreign_origin_are_refused_at_the_handshake(fleet: Fleet) -> None:
    await fleet.start_supervisor(origin_allowlist=["https://ops.example.com"])
    with pytest.raises(InvalidStatus) as wrong:
        await connect(fleet.ws_url, additional_headers={"Authorization": "Bearer wrong-token-000000000"})
    assert wrong.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as origin:
        await connect(fleet.ws_url, origin="https://evil.example",  # type: ignore[arg-type]
                      additional_headers={"Authorization": f"Bearer {TOKEN}"})
    assert origin.value.response.status_code == 403
    ok = await connect(fleet.ws_url, origin="https://ops.example.com",  # type: ignore[arg-type]
                       additional_headers={"Authorization": f"Bearer {TOKEN}"})
    await ok.close()
    node = await fleet.start_node("n1")  # no Origin header at all: allowed
    assert node.connected.is_set()


async def test_a_node_with_the_wrong_token_reports_why(fleet: Fleet, tmp_path: Path) -> None:
    await fleet.start_supervisor()
    from corral.fleet.node.client import Node

    from .conftest import node_config

    node = Node(node_config(tmp_path, fleet.ws_url, "bad"), "wrong-token-0000000000")
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    await wait_until(lambda: node.last_error is not None, 5, "a connection error")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert node.last_error == "supervisor refused the connection: HTTP 401 (wrong token?)"
    assert "bad" not in fleet.sup.state.nodes  # type: ignore[union-attr]


async def test_token_rotation_from_the_config_file_keeps_the_old_token_for_the_overlap(tmp_path: Path) -> None:
    from corral.config.fleet import SupervisorConfig, load_fleet_config
    from corral.fleet.supervisor.app import Supervisor

    path = tmp_path / "supervisor.yaml"
    body = ("server: {{port: 0, http_port: 0}}\ndatabase_url: sqlite:///{db}\n"
            "auth: {{token: {token}, rotation_overlap_seconds: 0.6, reload_interval_seconds: 0.05}}\n")
    path.write_text(body.format(db=tmp_path / "f.db", token="first-token-0123456789"))
    sup = Supervisor(load_fleet_config(path, SupervisorConfig), "first-token-0123456789", config_path=path)
    await sup.start()
    try:
        path.write_text(body.format(db=tmp_path / "f.db", token="second-token-0123456789"))
        await wait_until(lambda: sup.tokens.valid("second-token-0123456789"), 3, "the new token")
        assert sup.tokens.valid("first-token-0123456789")  # inside the overlap
        await wait_until(lambda: not sup.tokens.valid("first-token-0123456789"), 3, "the overlap to end")
        audit = await sup.store.list_audit()
        assert [a["action"] for a in audit] == ["auth.rotate"]
    finally:
        await sup.stop()


@pytest.mark.postgres
async def test_supervisor_runs_on_postgres_and_restarts_without_losing_state(postgres_url: str, fleet: Fleet) -> None:
    sup = await fleet.start_supervisor(database_url=postgres_url)
    node = await fleet.start_node("pg-node")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "pg", "wait": True})
    sid = started["output"]["session_id"]
    await wait_until(lambda: not node.outbox.pending, 5, "acks")
    events = await sup.store.list_events(node_id="pg-node", limit=100)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    await fleet.stop_node(node)
    await sup.stop()
    fleet.sup = None
    again = await fleet.start_supervisor(database_url=postgres_url)
    assert again.state.sessions[sid].state == "unreachable"  # nobody connected yet
    assert again.state.sessions[sid].input_tokens == sum(e["input_tokens"] for e in events)
    await fleet.start_node("pg-node")
    await wait_until(lambda: again.state.sessions[sid].state == "idle", 5, "session restored")


async def test_metrics_count_events_by_type_and_time_commands(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor()
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    sid = started["output"]["session_id"]
    await fleet.command("prompt", {"session_id": sid}, {"message": "again", "wait": True})
    await wait_until(lambda: sup.pipeline.stored_by_type["session.idle"] == 2, 5, "both turns stored")
    assert fleet.api is not None
    metrics = (await fleet.api.get("/metrics")).text
    for kind, count in (("session.started", 1), ("session.running", 2), ("session.message", 2), ("usage", 2),
                        ("session.idle", 2), ("node.online", 1)):
        assert f'corral_fleet_events_total{{type="{kind}"}} {count:.1f}' in metrics, kind
    for kind in ("start", "prompt"):
        assert f'corral_fleet_command_duration_seconds_count{{status="success",type="{kind}"}} 1.0' in metrics
        assert f'corral_fleet_command_duration_seconds_bucket{{le="+Inf",status="success",type="{kind}"}} 1.0' in metrics
    total = next(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith('corral_fleet_command_duration_seconds_sum{status="success",type="start"}'))
    assert 0 < total < 5


async def test_the_http_listener_gives_connections_tcp_nodelay() -> None:
    """asyncio turns Nagle off only for sockets that say TCP; with Nagle on, every answer of
    the HTTP API waited for the client's delayed ACK (a command round trip went 9 -> 57 ms)."""
    import socket

    from corral.fleet.supervisor.app import _listening_socket

    listener = _listening_socket("127.0.0.1", 0)
    nodelay: asyncio.Queue[int] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await nodelay.put(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        assert await asyncio.wait_for(nodelay.get(), 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
