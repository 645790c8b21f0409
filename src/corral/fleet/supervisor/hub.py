"""The WebSocket hub nodes connect to: handshake auth, registration, frame handling, liveness."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from corral.fleet.protocol import (
    MAX_BATCH_EVENTS,
    Envelope,
    ProtocolError,
    RegisterPayload,
    decode,
    encode,
    error_frame,
    split_batch,
)
from corral.fleet.store import FleetStore
from corral.fleet.supervisor.auth import TokenSet, bearer, origin_allowed
from corral.fleet.supervisor.commands import Dispatcher
from corral.fleet.supervisor.events import EventPipeline
from corral.fleet.supervisor.state import FleetState, SessionState

log = logging.getLogger("corral.fleet.hub")
REGISTER_TIMEOUT = 10.0


class NodeConnection:
    def __init__(self, node_id: str, ws: ServerConnection) -> None:
        self.node_id, self.ws = node_id, ws

    async def send(self, envelope: Envelope) -> None:
        await self.ws.send(encode(envelope))

    async def send_ack(self, seqs: list[int]) -> None:
        await self.ws.send(orjson.dumps(Envelope(type="ack", payload={"seqs": seqs}).to_dict()), text=True)


class Hub:
    def __init__(self, *, state: FleetState, store: FleetStore, pipeline: EventPipeline, dispatcher: Dispatcher,
                 tokens: TokenSet, origin_allowlist: list[str], heartbeat_interval: float, missed_count: int,
                 max_frame_bytes: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.state, self.store, self.pipeline, self.dispatcher = state, store, pipeline, dispatcher
        self.tokens, self.origins = tokens, origin_allowlist
        self.interval, self.missed = heartbeat_interval, missed_count
        self.max_frame = max_frame_bytes
        self.ssl = ssl_context
        self.connections: dict[str, NodeConnection] = {}
        self.rejected: dict[str, int] = {}
        self.server: Server | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._node_writes: dict[str, dict[str, Any]] = {}  # registrations not yet written
        self._node_writer: asyncio.Task[None] | None = None
        dispatcher.sender = self

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self.server = await serve(
            self._handle, host, port, process_request=self._check_request, ssl=self.ssl,
            # frames up to 4x the protocol limit are read and answered with an error frame;
            # beyond that the socket is closed (1009) before the frame is buffered
            max_size=self.max_frame * 4, ping_interval=None, compression=None,
        )
        self._monitor = asyncio.create_task(self._watch_liveness(), name="fleet-liveness")
        self._node_writer = asyncio.create_task(self._write_nodes(), name="fleet-node-writer")
        sock = next(iter(self.server.sockets))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        for task in (self._monitor, self._node_writer):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._flush_nodes()
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    @property
    def listening(self) -> bool:
        return self.server is not None and self.server.is_serving()

    # ---- handshake -----------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers: Headers = request.headers
        if not origin_allowed(headers.get("Origin"), self.origins):
            self._count("origin")
            return connection.respond(403, "origin not allowed\n")
        if not self.tokens.valid(bearer(headers.get("Authorization"))):
            self._count("auth")
            return connection.respond(401, "missing or invalid bearer token\n")
        return None

    def _count(self, code: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1

    # ---- a connection ---------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        address = f"{ws.remote_address[0]}:{ws.remote_address[1]}" if ws.remote_address else None
        conn: NodeConnection | None = None
        try:
            conn = await self._register(ws, address)
            if conn is None:
                return
            while True:
                # bytes, not str: orjson parses (and checks) the UTF-8 itself, and the
                # size check is exact without encoding again
                await self._on_frame(conn, await ws.recv(decode=False))
        except ConnectionClosed:
            pass
        finally:
            if conn is not None and self.connections.get(conn.node_id) is conn:
                del self.connections[conn.node_id]
                log.info("node %s disconnected", conn.node_id)

    async def _register(self, ws: ServerConnection, address: str | None) -> NodeConnection | None:
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), REGISTER_TIMEOUT)
            except TimeoutError:
                await ws.close(1008, "register expected")
                return None
            try:
                env = decode(raw, max_bytes=self.max_frame)
                if env.type != "register":
                    raise ProtocolError("register_first", "the first frame must be register", env.id)
            except ProtocolError as exc:
                self._count(exc.code)
                log.warning("rejected frame before register from %s: %s", address, exc.message)
                await ws.send(encode(error_frame(exc.code, exc.message, exc.ref)))
                continue
            break
        reg = RegisterPayload.model_validate(env.payload)
        previous = self.connections.get(reg.node_id)
        conn = NodeConnection(reg.node_id, ws)
        self.connections[reg.node_id] = conn
        if previous is not None:
            # a reconnect whose old socket has not timed out yet: the new one wins
            await previous.ws.close(1000, "replaced by a new connection")
        await self.state.restore_evicted(self.store, (snap.session_id for snap in reg.sessions))
        node, sessions = self.state.register(reg, address, time.time())
        # the node row is informational (the live registry is in memory): written in batches
        self._node_writes[node.node_id] = node.row()
        await self.store.upsert_sessions([s.row() for s in sessions])
        await conn.send(Envelope(type="registered", payload={
            "node_id": reg.node_id, "heartbeat_interval_seconds": self.interval, "max_frame_bytes": self.max_frame,
            "max_batch_events": MAX_BATCH_EVENTS}))
        self.pipeline.emit("node.online", {"node_id": reg.node_id, "address": address})
        log.info("node %s registered from %s with %d sessions", reg.node_id, address, len(reg.sessions))
        return conn

    async def _on_frame(self, conn: NodeConnection, raw: str | bytes) -> None:
        node = self.state.nodes.get(conn.node_id)
        if node is not None:
            node.last_seen = time.time()
            if node.status != "online":
                node.status = "online"
        try:
            env = decode(raw, max_bytes=self.max_frame)
        except ProtocolError as exc:
            self._count(exc.code)
            log.warning("invalid frame from node %s: %s: %s", conn.node_id, exc.code, exc.message)
            await conn.send(error_frame(exc.code, exc.message, exc.ref))
            return
        if env.type == "heartbeat":
            return
        if env.type == "event":
            self.pipeline.submit(conn.node_id, env, conn)
        elif env.type == "events":
            events, errors = split_batch(env)
            self.pipeline.submit_many(conn.node_id, events, conn)
            for error in errors:  # as if each invalid event had come alone: answered, not stored
                self._count(error.code)
                log.warning("invalid event in a batch from node %s: %s: %s", conn.node_id, error.code, error.message)
                await conn.send(error_frame(error.code, error.message, error.ref))
        elif env.type == "command_result":
            if not self.dispatcher.resolve(env.payload):
                log.info("late or unknown command_result %s from %s", env.payload.get("command_id"), conn.node_id)
        elif env.type == "error":
            log.warning("node %s reported an error: %s", conn.node_id, env.payload.get("message"))
        else:
            self._count("unexpected_type")
            await conn.send(error_frame("unexpected_type", f"a node may not send {env.type!r}", env.id))

    async def send_to(self, node_id: str, envelope: Envelope) -> bool:
        conn = self.connections.get(node_id)
        if conn is None:
            return False
        try:
            await conn.send(envelope)
            return True
        except ConnectionClosed:
            return False

    async def _write_nodes(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            try:
                await self._flush_nodes()
            except Exception:  # the rows stay queued for the next try
                log.exception("writing node rows failed")

    async def _flush_nodes(self) -> None:
        if not self._node_writes:
            return
        rows, self._node_writes = self._node_writes, {}
        try:
            await self.store.upsert_nodes(list(rows.values()))
        except Exception:
            self._node_writes = {**rows, **self._node_writes}
            raise

    # ---- liveness ---------------------------------------------------------------------

    async def _watch_liveness(self) -> None:
        while True:
            await asyncio.sleep(min(self.interval, 1.0) if self.interval < 2 else self.interval / 2)
            await self.check_liveness(time.time())

    async def check_liveness(self, now: float) -> list[str]:
        limit = self.interval * self.missed
        gone = [n.node_id for n in self.state.nodes.values()
                if n.status == "online" and now - n.last_seen > limit]
        for node_id in gone:
            changed: list[SessionState] = self.state.mark_offline(node_id)
            self._node_writes[node_id] = self.state.nodes[node_id].row()
            await self.store.upsert_sessions([s.row() for s in changed])
            silent = round(now - self.state.nodes[node_id].last_seen, 3)
            self.pipeline.emit("node.offline", {"node_id": node_id, "silent_seconds": silent,
                                                "sessions_unreachable": [s.session_id for s in changed]})
            for session in changed:
                self.pipeline.emit("session.unreachable", {"node_id": node_id}, session_id=session.session_id,
                                   project=session.project)
            conn = self.connections.pop(node_id, None)
            if conn is not None:
                await conn.ws.close(1001, "heartbeat timeout")
            log.warning("node %s offline after %.1fs without a frame", node_id, limit)
        return gone

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.connections), "rejected": dict(self.rejected)}
