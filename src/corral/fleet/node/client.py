"""The node process: outbound WebSocket to the supervisor with jittered backoff,
registration with a session snapshot, heartbeats, resend of unacknowledged events,
and command execution through the session manager."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from corral import __version__
from corral.config.fleet import NativeBackendConfig, NodeConfig
from corral.fleet.backoff import Backoff
from corral.fleet.node.backends.base import Backend, BackendError
from corral.fleet.node.outbox import Outbox
from corral.fleet.node.sessions import CommandFailed, SessionManager
from corral.fleet.protocol import Envelope, ProtocolError, batch_frames, decode, encode, error_frame
from corral.store.engine import data_dir

log = logging.getLogger("corral.fleet.node")


def build_backends(config: NodeConfig) -> dict[str, Backend]:
    from corral.fleet.node.backends.native import NativeBackend
    from corral.fleet.node.backends.opencode import OpenCodeBackend

    backends: dict[str, Backend] = {}
    for name, spec in config.backends.items():
        if isinstance(spec, NativeBackendConfig):
            backends[name] = NativeBackend(name, spec)
        else:
            directories = {p.name: Path(p.directory) for p in config.projects if p.backend == name}
            backends[name] = OpenCodeBackend(name, spec, directories, outbox_path(config).parent)
    return backends


def outbox_path(config: NodeConfig) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", config.node_id)
    return (config.state_dir or data_dir()) / f"fleet-node-{safe}.db"


class Node:
    def __init__(self, config: NodeConfig, token: str, *, backends: dict[str, Backend] | None = None) -> None:
        self.config, self.token = config, token
        self.backends = backends if backends is not None else build_backends(config)
        self.outbox = Outbox(outbox_path(config))
        self.sessions = SessionManager(config.projects, self.backends, self.emit, self.outbox)
        self.backoff = Backoff(config.backoff_min_seconds, config.backoff_max_seconds)
        self.heartbeat_interval = config.heartbeat_interval_seconds
        # what the supervisor takes, from `registered`: events per frame (1 for a supervisor
        # that predates `events` frames) and bytes per frame
        self.batch_events = 1
        self.frame_bytes = config.max_frame_bytes
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._commands: set[asyncio.Task[None]] = set()

    async def emit(self, payload: dict[str, Any]) -> None:
        await self.outbox.append(payload)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        await self.outbox.open()
        for backend in self.backends.values():
            await backend.start()
        await self.sessions.restore()
        try:
            while not stop.is_set():
                await self._connect_once(stop)
                if stop.is_set():
                    break
                delay = self.backoff.next()
                log.info("reconnecting to %s in %.2fs", self.config.supervisor_url, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for task in list(self._commands):
            task.cancel()
        await self.sessions.aclose()
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
        await self.outbox.close()

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.config.supervisor_url.startswith("wss://"):
            return None
        context = ssl.create_default_context()
        if self.config.ca_file:
            context.load_verify_locations(str(self.config.ca_file))
        return context

    async def _connect_once(self, stop: asyncio.Event) -> None:
        try:
            async with connect(self.config.supervisor_url, ssl=self._ssl(), open_timeout=10,
                               additional_headers={"Authorization": f"Bearer {self.token}"},
                               max_size=self.config.max_frame_bytes * 4, ping_interval=None,
                               compression=None, close_timeout=2) as ws:
                await self._session(ws, stop)
        except InvalidStatus as exc:
            code = exc.response.status_code
            hint = " (wrong token?)" if code == 401 else " (origin?)" if code == 403 else ""
            self.last_error = f"supervisor refused the connection: HTTP {code}{hint}"
            log.error(self.last_error)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self.last_error = f"cannot reach supervisor: {type(exc).__name__}: {exc}"
            log.warning(self.last_error)
        except ConnectionClosed as exc:
            self.last_error = f"connection closed: {exc.rcvd.code if exc.rcvd else 'no close frame'}"
            log.warning(self.last_error)
        finally:
            self._ws = None
            self.connected.clear()

    async def _register(self, ws: ClientConnection) -> None:
        register = Envelope(type="register", payload={
            "node_id": self.config.node_id, "hostname": socket.gethostname(), "version": __version__,
            "backends": sorted(self.backends), "projects": [p.name for p in self.config.projects],
            "sessions": self.sessions.snapshots(), "last_seq": self.outbox.next_seq - 1})
        await ws.send(encode(register))
        while True:
            env = decode(await asyncio.wait_for(ws.recv(), 10), max_bytes=self.config.max_frame_bytes * 4)
            if env.type == "registered":
                self.heartbeat_interval = float(env.payload.get("heartbeat_interval_seconds")
                                                or self.heartbeat_interval)
                self.batch_events = max(1, int(env.payload.get("max_batch_events") or 1))
                self.frame_bytes = int(env.payload.get("max_frame_bytes") or self.config.max_frame_bytes)
                return
            if env.type == "error":
                raise ProtocolError(str(env.payload.get("code")), str(env.payload.get("message")))

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        try:
            await self._register(ws)
        except ProtocolError as exc:
            self.last_error = f"registration refused: {exc.code}: {exc.message}"
            log.error(self.last_error)
            return
        self._ws = ws
        self.backoff.reset()
        self.connected.set()
        self.last_error = None
        log.info("connected to %s as %s; %d events to resend", self.config.supervisor_url, self.config.node_id,
                 len(self.outbox.pending))
        tasks = [asyncio.create_task(coro) for coro in
                 (self._reader(ws), self._sender(ws), self._heartbeats(ws), stop.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sender(self, ws: ClientConnection) -> None:
        sent_upto = 0  # a new connection resends everything not yet acknowledged
        while True:
            self._wake.clear()
            # what piled up while the last frame was on its way goes out as one `events` frame
            pending = self.outbox.after(sent_upto)
            for seq, frame in batch_frames(pending, max_events=self.batch_events, max_bytes=self.frame_bytes):
                await ws.send(frame)
                sent_upto = seq
            await self._wake.wait()

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await ws.send(encode(Envelope(type="heartbeat", payload={"sessions": len(self.sessions.sessions)})))

    async def _reader(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                env = decode(raw, max_bytes=self.config.max_frame_bytes * 4)
            except ProtocolError as exc:
                log.warning("invalid frame from the supervisor: %s", exc.message)
                await ws.send(encode(error_frame(exc.code, exc.message, exc.ref)))
                continue
            if env.type == "ack":
                await self.outbox.ack([int(s) for s in env.payload.get("seqs", [])])
            elif env.type == "command":
                task = asyncio.create_task(self._run_command(ws, env.payload))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)
            elif env.type == "error":
                log.warning("supervisor reported: %s: %s", env.payload.get("code"), env.payload.get("message"))

    async def _run_command(self, ws: ClientConnection, payload: dict[str, Any]) -> None:
        command_id, kind = str(payload["command_id"]), str(payload["type"])
        limit = float(payload.get("timeout") or 30)
        result: dict[str, Any] = {"command_id": command_id}
        try:
            output = await asyncio.wait_for(self.sessions.handle(kind, dict(payload.get("args") or {})), limit)
            result.update(status="success", output=output)
        except TimeoutError:
            result.update(status="timeout", error=f"{kind} did not finish within {limit:g}s")
        except (CommandFailed, BackendError) as exc:
            result.update(status="failure", error=str(exc))
        except Exception as exc:  # a broken command must not take the node down
            log.exception("command %s failed", kind)
            result.update(status="failure", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(Envelope(type="command_result", payload=result)))
