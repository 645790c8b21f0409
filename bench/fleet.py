"""`python -m bench fleet --nodes N`: N simulated nodes in this process against a real
`corral supervisor` process (SQLite store). Each node registers, heartbeats and sends
`--events` events as fast as the supervisor acknowledges them (a bounded window of
unacknowledged events per node, like a real node's outbox). Measured: events/s
stored (an ack is sent only after the batch is committed), supervisor RSS per node,
command round trip (HTTP API -> node -> result) p50/p99, and the events counted in
the supervisor's database at the end against the events sent: zero lost."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    RESULTS_DIR,
    Child,
    Report,
    cpu_seconds,
    cpu_sets,
    free_port,
    percentile,
    rss_kb,
    spawn,
    wait_http,
)
from corral.fleet.protocol import Envelope, batch_frames, encode

TOKEN = "bench-fleet-token-0123456789abcdef"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100, help="Events per node.")
    parser.add_argument("--window", type=int, default=20, help="Unacknowledged events a node may have in flight.")
    parser.add_argument("--commands", type=int, default=200, help="Command round trips to time (sequential).")
    parser.add_argument("--connect-parallel", type=int, default=100)
    parser.add_argument("--single-event-frames", action="store_true",
                        help="Nodes send one event per frame, as nodes did before `events` frames.")
    parser.add_argument("--supervisor-src", help="Run the supervisor from this source tree (the directory holding "
                        "the `corral` package, e.g. an exported older commit's `src`): an A/B of a change.")
    parser.add_argument("--out", default=str(RESULTS_DIR))


def frame(kind: str, payload: dict[str, Any], seq: int | None = None) -> str:
    return encode(Envelope(type=kind, payload=payload, seq=seq))


class Node:
    """What `corral.fleet.node` sends, built with the same protocol functions, minus the
    outbox file and validation of what comes back: the load generator must not be the
    bottleneck. Events are produced as fast as the window of unacknowledged ones allows;
    those produced while a frame was on its way go out together, in one `events` frame
    when the supervisor takes them (`registered.max_batch_events`), as the real node's
    sender does with its outbox."""

    def __init__(self, url: str, node_id: str, window: int, *, single: bool = False) -> None:
        self.url, self.node_id = url, node_id
        self.window = window
        self.single = single
        self.max_batch, self.max_bytes = 1, 1024 * 1024
        self.acked: set[int] = set()
        self.room = asyncio.Event()
        self.sent = 0
        self.frames = 0
        self.errors: list[dict[str, Any]] = []  # error frames from the supervisor: refused frames
        self.commands = 0
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.expect = 0

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=60,
                                ping_interval=None, compression=None, max_size=None)
        await self.ws.send(frame("register", {"node_id": self.node_id, "hostname": "bench", "version": "bench",
                                              "backends": ["sim"], "projects": [], "sessions": []}))
        while True:
            message = orjson.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if message["type"] == "registered":
                if not self.single:
                    self.max_batch = max(1, int(message["payload"].get("max_batch_events") or 1))
                self.max_bytes = int(message["payload"]["max_frame_bytes"])
                break
            if message["type"] == "error":
                raise RuntimeError(f"{self.node_id}: register refused: {message['payload']}")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = orjson.loads(raw)
            kind = message["type"]
            if kind == "ack":
                self.acked.update(message["payload"]["seqs"])
                self.room.set()
                if len(self.acked) >= self.expect:
                    self.done.set()
            elif kind == "command":
                self.commands += 1
                await self.ws.send(frame("command_result", {"command_id": message["payload"]["command_id"],
                                                            "status": "success", "output": {"bench": True}}))
            elif kind == "error":
                self.errors.append(message["payload"])

    async def send_events(self, count: int) -> None:
        self.expect = count
        while self.sent < count:
            room = self.window - (self.sent - len(self.acked))
            if room <= 0:
                self.room.clear()
                await self.room.wait()
                continue
            first = self.sent + 1
            pending = [(seq, frame("event", {"type": "session.output", "session_id": f"{self.node_id}-s1",
                                             "data": {"n": seq, "text": "hello from the bench"}}, seq=seq))
                       for seq in range(first, min(count, self.sent + room) + 1)]
            self.sent += len(pending)
            for _, data in batch_frames(pending, max_events=self.max_batch, max_bytes=self.max_bytes):
                await self.ws.send(data)
                self.frames += 1

    async def heartbeat(self) -> None:
        await self.ws.send(frame("heartbeat", {"sessions": 1}))

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()


def start_supervisor(work: Path, cpus: list[int] | None, src: str | None = None) -> tuple[Child, int, int, Path]:
    db = work / "fleet.db"
    config = work / "supervisor.yaml"
    config.write_text(f"server: {{heartbeat_interval_seconds: 5, heartbeat_missed_count: 6}}\n"
                      f"database_url: sqlite:///{db}\n")
    ws_port, http_port = free_port(), free_port()
    argv = [sys.executable, "-m", "corral", "supervisor", "--config", str(config), "--port", str(ws_port),
            "--http-port", str(http_port), "--log-level", "warning"]
    env = {"CORRAL_FLEET_TOKEN": TOKEN, "CORRAL_DATA_DIR": str(work)}
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    child = spawn("supervisor", argv, log_dir=work, cpus=cpus, env=env)
    try:
        wait_http(f"http://127.0.0.1:{http_port}/readyz", child, timeout=60)
    except BaseException:
        child.stop()
        raise
    return child, ws_port, http_port, db


async def command_round_trips(http_port: int, nodes: list[Node], count: int) -> list[float]:
    import httpx

    times: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for n in range(count):
            node = nodes[(n * 7919) % len(nodes)]
            started = time.perf_counter()
            resp = await api.post("/api/v1/commands", json={"type": "status", "target": {"node_id": node.node_id},
                                                            "timeout": 30})
            elapsed = time.perf_counter() - started
            body = resp.json()
            if resp.status_code != 200 or body.get("data", {}).get("status") != "success":
                raise RuntimeError(f"command failed: {resp.status_code} {body}")
            times.append(elapsed * 1000)
    return times


async def drive(args: argparse.Namespace, ws_port: int, http_port: int, pid: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{ws_port}"
    nodes = [Node(url, f"bench-{i:05d}", args.window, single=args.single_event_frames) for i in range(args.nodes)]
    rss_idle = rss_kb(pid)
    gate = asyncio.Semaphore(args.connect_parallel)

    async def join(node: Node) -> None:
        async with gate:
            await node.connect()

    t0 = time.perf_counter()
    await asyncio.gather(*(join(n) for n in nodes))
    connect_s = time.perf_counter() - t0
    await asyncio.gather(*(n.heartbeat() for n in nodes))
    await asyncio.sleep(1.0)
    rss_connected = rss_kb(pid)
    try:
        t1 = time.perf_counter()
        cpu1, own1 = cpu_seconds(pid), time.process_time()
        beating = asyncio.create_task(_heartbeats(nodes))
        await asyncio.gather(*(n.send_events(args.events) for n in nodes))
        await asyncio.wait_for(asyncio.gather(*(n.done.wait() for n in nodes)), 300)
        stored_s = time.perf_counter() - t1
        sup_cpu, own_cpu = cpu_seconds(pid) - cpu1, time.process_time() - own1
        beating.cancel()
        rss_after_events = rss_kb(pid)
        rtt = await command_round_trips(http_port, nodes, args.commands)
    finally:
        await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)
    sent = sum(n.sent for n in nodes)
    acked = sum(len(n.acked) for n in nodes)
    frames = sum(n.frames for n in nodes)
    errors = [e for n in nodes for e in n.errors]
    return {"connect_s": connect_s, "stored_s": stored_s, "sent": sent, "acked": acked, "event_frames": frames,
            "events_per_frame": sent / frames if frames else 0.0,
            "error_frames": len(errors), "first_error": errors[0] if errors else None, "rss_idle_kb": rss_idle,
            "rss_connected_kb": rss_connected, "rss_after_events_kb": rss_after_events, "rtt_ms": rtt,
            "supervisor_cpu_s": sup_cpu, "nodes_cpu_s": own_cpu}


async def _heartbeats(nodes: list[Node]) -> None:
    while True:
        await asyncio.sleep(2.0)
        await asyncio.gather(*(n.heartbeat() for n in nodes), return_exceptions=True)


def count_stored(db: Path) -> tuple[int, int]:
    """(event rows, distinct (node, seq) pairs) from the bench nodes."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select count(*), count(distinct node_id || ':' || seq) from fleet_events "
                            "where node_id like 'bench-%'").fetchone()
    return int(rows[0]), int(rows[1])


def run(args: argparse.Namespace) -> Report:
    import tempfile

    server_cpus, load_cpus = cpu_sets()
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    report = Report("fleet")
    work = Path(tempfile.mkdtemp(prefix="corral-bench-fleet-"))
    child, ws_port, http_port, db = start_supervisor(work, server_cpus, args.supervisor_src)
    try:
        try:
            import uvloop

            result = uvloop.run(drive(args, ws_port, http_port, child.pid))
        except ImportError:
            result = asyncio.run(drive(args, ws_port, http_port, child.pid))
        rows, distinct = count_stored(db)
    finally:
        child.stop(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    expected = args.nodes * args.events
    per_node = (result["rss_connected_kb"] - result["rss_idle_kb"]) / args.nodes
    rtt = result.pop("rtt_ms")
    report.summary = {
        **result, "nodes": args.nodes, "events_per_node": args.events, "expected": expected,
        "stored_rows": rows, "stored_distinct": distinct, "lost": expected - distinct, "duplicates": rows - distinct,
        "events_per_s": expected / result["stored_s"], "rss_per_node_kb": per_node,
        # the supervisor's CPU per stored event: its capacity on a core of its own, whatever else ran
        "supervisor_cpu_us_per_event": 1e6 * result["supervisor_cpu_s"] / expected,
        "supervisor_cpu_share": result["supervisor_cpu_s"] / result["stored_s"],
        "rtt_p50_ms": percentile(rtt, 50), "rtt_p99_ms": percentile(rtt, 99),
        "rtt_mean_ms": statistics.fmean(rtt) if rtt else None,
    }
    report.meta = {"window": args.window, "single_event_frames": args.single_event_frames,
                   "supervisor_pinned_to": server_cpus, "nodes_pinned_to": load_cpus,
                   "store": "SQLite (WAL)", "supervisor_src": args.supervisor_src}
    s = report.summary
    report.target(f"supervisor RSS per node ({args.nodes} nodes)", per_node, 100.0, unit="KB", higher_is_better=False)
    report.target("events stored per second (SQLite)", s["events_per_s"], 10_000, unit="events/s",
                  higher_is_better=True)
    report.target("events lost", s["lost"], 0, unit="events", higher_is_better=False)
    return report


def capacity(cpu_us_per_event: float) -> str:
    """Events per second one free core would store. A short run can finish inside one
    tick of the kernel's CPU clock (10 ms), so 0 µs per event can be measured."""
    return f"~{1e6 / cpu_us_per_event:.0f} events/s" if cpu_us_per_event else "not measurable in so short a run"


def show(report: Report) -> None:
    s = report.summary
    print(f"fleet: {s['nodes']} nodes connected in {s['connect_s']:.2f} s; {s['expected']} events "
          f"({s['events_per_node']}/node) stored and acknowledged in {s['stored_s']:.2f} s = "
          f"{s['events_per_s']:.0f} events/s")
    busy = 100 * s["supervisor_cpu_share"]
    per_event = s["supervisor_cpu_us_per_event"]
    print(f"supervisor CPU {per_event:.0f} us/event (busy {busy:.0f}% "
          f"of the wall time; capacity on a free core {capacity(per_event)}); "
          f"the simulated nodes used {s['nodes_cpu_s']:.1f} s CPU")
    print(f"nodes sent {s['sent']} events in {s['event_frames']} frames ({s['events_per_frame']:.1f} events "
          f"per frame, window {report.meta['window']}); error frames from the supervisor: {s['error_frames']}"
          + (f" (first: {s['first_error']})" if s["first_error"] else ""))
    print(f"stored rows {s['stored_rows']} (distinct {s['stored_distinct']}): lost {s['lost']}, "
          f"duplicates {s['duplicates']}; acked {s['acked']} of {s['sent']} sent")
    print(f"supervisor RSS: idle {s['rss_idle_kb'] / 1024:.1f} MB, {s['nodes']} nodes connected "
          f"{s['rss_connected_kb'] / 1024:.1f} MB ({s['rss_per_node_kb']:.1f} KB/node), after events "
          f"{s['rss_after_events_kb'] / 1024:.1f} MB")
    print(f"command round trip (HTTP API -> node -> result): p50 {s['rtt_p50_ms']:.2f} ms, "
          f"p99 {s['rtt_p99_ms']:.2f} ms")
    report.print_targets()
