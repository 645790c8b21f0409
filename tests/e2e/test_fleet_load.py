"""1,000 simulated nodes from one process against a real supervisor process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from corral.fleet.testing import FleetProcess, SimulatedNode, free_port, start_supervisor

TOKEN = "load-fleet-token-0123456789"
NODES = 1000


@pytest.mark.slow
async def test_a_thousand_nodes_register_and_heartbeat(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.yaml"
    config.write_text(f"server: {{heartbeat_interval_seconds: 5, heartbeat_missed_count: 3}}\n"
                      f"database_url: sqlite:///{tmp_path / 'fleet.db'}\n")
    ws, http = free_port(), free_port()
    sup: FleetProcess = await asyncio.to_thread(start_supervisor, config, port=ws, http_port=http, token=TOKEN)
    nodes = [SimulatedNode(f"ws://127.0.0.1:{ws}", TOKEN, f"load-{i:04d}") for i in range(NODES)]
    gate = asyncio.Semaphore(100)

    async def join(node: SimulatedNode) -> None:
        async with gate:
            await node.connect(open_timeout=30)

    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=30)
    try:
        async with asyncio.timeout(60):
            t0 = time.monotonic()
            await asyncio.gather(*(join(n) for n in nodes))
            registered = time.monotonic() - t0
            online = (await api.get("/api/v1/nodes", params={"status": "online"})).json()["data"]
            assert len(online) == NODES
            before = {n["node_id"]: n["last_seen"] for n in online}
            await asyncio.sleep(0.2)
            t1 = time.monotonic()
            for _ in range(2):
                await asyncio.gather(*(n.heartbeat() for n in nodes))
            beats = time.monotonic() - t1

            async def all_refreshed() -> bool:
                rows = (await api.get("/api/v1/nodes", params={"status": "online"})).json()["data"]
                return len(rows) == NODES and all(r["last_seen"] > before[r["node_id"]] for r in rows)

            while not await all_refreshed():
                await asyncio.sleep(0.1)
            metrics = (await api.get("/metrics")).text
        assert "corral_fleet_connections_active 1000.0" in metrics
        print(f"\n{NODES} nodes registered in {registered:.2f}s; 2 heartbeat rounds sent in {beats:.2f}s")
    finally:
        await api.aclose()
        await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)
        await asyncio.to_thread(sup.stop)
