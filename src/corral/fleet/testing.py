"""Test helpers for the fleet, shipped so users can test their own setups offline:
real `corral supervisor` / `corral node` processes, a lightweight simulated node, and a
loopback TCP proxy that can cut connections (also mid-frame)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from corral.fleet.protocol import Envelope, decode, encode
from corral.testing.server import free_port

__all__ = ["FleetProcess", "SimulatedNode", "TcpProxy", "free_port", "start_node", "start_supervisor",
           "wait_until"]


class FleetProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def _spawn(args: list[str], log: Path, env: dict[str, str] | None, cwd: Path | None) -> FleetProcess:
    handle = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "corral", *args], stdout=handle, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    handle.close()
    return FleetProcess(proc, log)


def start_supervisor(config: Path, *, port: int, http_port: int, token: str, env: dict[str, str] | None = None,
                     ready_timeout: float = 20.0, log: Path | None = None, cwd: Path | None = None,
                     extra_args: Sequence[str] = ()) -> FleetProcess:
    log = log or (cwd or config.parent) / f"supervisor-{port}.log"
    fp = _spawn(["supervisor", "--config", str(config), "--port", str(port), "--http-port", str(http_port),
                 "--token", token, *extra_args], log, env, cwd or config.parent)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if fp.proc.poll() is not None:
            raise RuntimeError(f"corral supervisor exited with {fp.proc.returncode}:\n{fp.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=0.5).status_code == 200:
                return fp
        time.sleep(0.05)
    fp.kill()
    raise RuntimeError(f"corral supervisor not ready in {ready_timeout}s:\n{fp.output()}")


def start_node(config: Path, *, supervisor_url: str, node_id: str, token: str,
               env: dict[str, str] | None = None, log: Path | None = None, cwd: Path | None = None) -> FleetProcess:
    log = log or (cwd or config.parent) / f"node-{node_id}.log"
    return _spawn(["node", "--config", str(config), "--supervisor-url", supervisor_url, "--node-id", node_id,
                   "--token", token], log, env, cwd or config.parent)


async def wait_until(check: Callable[[], bool | Awaitable[bool]], within: float, what: str,
                     interval: float = 0.05) -> None:
    """Polls ``check`` (plain or async) until it is true; fails naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


class SimulatedNode:
    """A minimal node speaking the protocol directly (load tests, malformed-frame tests)."""

    def __init__(self, url: str, token: str, node_id: str, *, projects: list[str] | None = None) -> None:
        self.url, self.token, self.node_id = url, token, node_id
        self.projects = projects or []
        self.ws: ClientConnection | None = None
        self.acked: set[int] = set()
        self.errors: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.seq = 0
        self.command_status = "success"  # what this node answers to every command
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, open_timeout: float = 20) -> dict[str, Any]:
        self.ws = await connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                                open_timeout=open_timeout, ping_interval=None, compression=None,
                                max_size=None)
        await self.ws.send(encode(Envelope(type="register", payload={
            "node_id": self.node_id, "hostname": "sim", "version": "sim", "backends": ["sim"],
            "projects": self.projects, "sessions": []})))
        while True:
            env = decode(await asyncio.wait_for(self.ws.recv(), open_timeout), max_bytes=2**24)
            if env.type == "registered":
                break
            if env.type == "error":
                raise RuntimeError(f"register refused: {env.payload}")
        self._reader = asyncio.create_task(self._read())
        return env.payload

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                env = decode(raw, max_bytes=2**24)
                if env.type == "ack":
                    self.acked.update(int(s) for s in env.payload["seqs"])
                elif env.type == "error":
                    self.errors.append(env.payload)
                elif env.type == "command":
                    self.commands.append(env.payload)
                    await self.ws.send(encode(Envelope(type="command_result", payload={
                        "command_id": env.payload["command_id"], "status": self.command_status,
                        "output": {"simulated": True},
                        "error": None if self.command_status == "success" else "simulated failure"})))

    async def send_raw(self, frame: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(frame)

    async def heartbeat(self) -> None:
        await self.send_raw(encode(Envelope(type="heartbeat", payload={"sessions": 0})))

    async def event(self, kind: str, session_id: str | None = None, data: dict[str, Any] | None = None,
                    seq: int | None = None) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        await self.send_raw(encode(Envelope(type="event", seq=seq, payload={
            "type": kind, "session_id": session_id, "data": data or {}})))
        return seq

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


class TcpProxy:
    """Loopback TCP proxy. ``cut()`` drops every open connection; with ``mid_frame`` it
    first forwards only part of the next chunk from the node, so the supervisor sees a
    truncated WebSocket frame. ``pause()`` refuses new connections until ``resume()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepting = True
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._truncate_next = False

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        pair = (writer, up_writer)
        self._pairs.append(pair)
        await asyncio.gather(self._pipe(reader, up_writer, upstream=True), self._pipe(up_reader, writer),
                             return_exceptions=True)
        for w in pair:
            w.close()
        if pair in self._pairs:
            self._pairs.remove(pair)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool = False) -> None:
        while data := await reader.read(65536):
            if upstream and self._truncate_next and len(data) > 4:
                self._truncate_next = False
                writer.write(data[: len(data) // 2])
                await writer.drain()
                self._drop_all()
                return
            writer.write(data)
            await writer.drain()

    def _drop_all(self) -> None:
        for a, b in list(self._pairs):
            for w in (a, b):
                w.transport.abort()
        self._pairs.clear()

    @property
    def cut_pending(self) -> bool:
        """A `cut(mid_frame=True)` waiting for the next frame from the client."""
        return self._truncate_next

    def cut(self, *, mid_frame: bool = False) -> None:
        if mid_frame:
            self._truncate_next = True
        else:
            self._drop_all()

    def pause(self) -> None:
        self.accepting = False
        self._drop_all()

    def resume(self) -> None:
        self.accepting = True

    async def stop(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
