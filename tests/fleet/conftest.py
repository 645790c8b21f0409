"""Fixtures for fleet tests: an in-process supervisor on port 0 and in-process nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.config.fleet import NodeConfig, SupervisorConfig
from corral.fleet.node.client import Node
from corral.fleet.supervisor.app import Supervisor
from corral.fleet.supervisor.http import build_http_app

TOKEN = "test-fleet-token-0123456789"


def supervisor_config(tmp_path: Path, **overrides: Any) -> SupervisorConfig:
    data: dict[str, Any] = {
        "server": {"port": 0, "http_port": 0, "heartbeat_interval_seconds": 0.2, "heartbeat_missed_count": 3},
        "database_url": f"sqlite:///{tmp_path / 'fleet.db'}",
        "policies": {"check_interval_seconds": 0.1},
        "event_flush_ms": 5,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return SupervisorConfig.model_validate(data)


def node_config(tmp_path: Path, url: str, node_id: str, **overrides: Any) -> NodeConfig:
    data: dict[str, Any] = {
        "node_id": node_id, "supervisor_url": url, "state_dir": str(tmp_path / "node-state"),
        "heartbeat_interval_seconds": 0.2,
        "backends": {"scripted": {"type": "native", "model": "scripted",
                                  "provider": {"type": "scripted", "echo": True}}},
        "projects": [{"name": "demo", "directory": str(tmp_path / "demo"), "backend": "scripted"}],
    }
    data.update(overrides)
    return NodeConfig.model_validate(data)


class Fleet:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.sup: Supervisor | None = None
        self.api: httpx.AsyncClient | None = None
        self.nodes: list[tuple[Node, asyncio.Event, asyncio.Task[None]]] = []

    @property
    def ws_url(self) -> str:
        assert self.sup is not None
        return f"ws://127.0.0.1:{self.sup.ws_port}"

    async def start_supervisor(self, **overrides: Any) -> Supervisor:
        if self.api is not None:
            await self.api.aclose()
        self.sup = Supervisor(supervisor_config(self.tmp_path, **overrides), TOKEN)
        await self.sup.start()
        self.api = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_http_app(self.sup)),
                                     base_url="http://fleet", headers={"Authorization": f"Bearer {TOKEN}"})
        return self.sup

    async def start_node(self, node_id: str = "n1", **overrides: Any) -> Node:
        assert self.sup is not None
        node = Node(node_config(self.tmp_path, self.ws_url, node_id, **overrides), TOKEN)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        self.nodes.append((node, stop, task))
        async with asyncio.timeout(10):
            await node.connected.wait()
        return node

    async def stop_node(self, node: Node) -> None:
        for entry in list(self.nodes):
            if entry[0] is node:
                entry[1].set()
                await asyncio.wait_for(entry[2], 10)
                self.nodes.remove(entry)

    async def command(self, kind: str, target: dict[str, Any], args: dict[str, Any] | None = None,
                      **extra: Any) -> dict[str, Any]:
        assert self.api is not None
        response = await self.api.post("/api/v1/commands", json={"type": kind, "target": target,
                                                                  "args": args or {}, **extra})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def close(self) -> None:
        for _node, stop, task in self.nodes:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        if self.api is not None:
            await self.api.aclose()
        if self.sup is not None:
            await self.sup.stop()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        await f.close()
