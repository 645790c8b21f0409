"""Real loopback peers for the upstream wire's tests: an HTTP/1.1 server that answers
as a handler says, and an HTTP proxy (``CONNECT`` tunnels and forwarding)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Upstream:
    """A loopback server; `handler(reader, writer, n)` answers the n-th connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_client = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
            if await reader.read(1) == b"":
                self.closed_by_client += 1
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head and its body (content-length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), None)
    if length is not None:
        return head, await reader.readexactly(length)
    body = b""
    if b"transfer-encoding: chunked" in lines:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return head, body
    return head, body


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(h + b"\r\n" for h in extra) \
        + b"content-length: %d\r\n\r\n" % len(body) + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    """Answers every request of the connection with ``{"echo": <body length>}``."""
    while True:
        try:
            _, body = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(answer(b'{"echo": %d}' % len(body)))
        await writer.drain()


class Proxy:
    """An HTTP proxy on loopback, as a real one behaves: ``CONNECT host:port`` opens a
    tunnel (answered ``200``, then bytes are piped both ways); any other request is
    forwarded, its absolute-form target kept, to the host and port it names. It records
    each connection's first request head. ``refuse`` answers every request with that
    status instead; ``target`` sends every tunnel there, whatever the client asked for."""

    def __init__(self, *, refuse: int | None = None, target: tuple[str, int] | None = None) -> None:
        self.refuse = refuse
        self.target = target
        self.heads: list[bytes] = []
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            if self.refuse is not None:
                writer.write(b"HTTP/1.1 %d Nope\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % self.refuse)
                await writer.drain()
                return
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                host, port_number = self.target or (host, int(port))
                upstream_reader, upstream_writer = await asyncio.open_connection(host, port_number)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:  # forwarding: http://host:port/path
                authority = target.split(b"/", 3)[2].decode()
                host, _, port = authority.rpartition(":")
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port or 80))
                upstream_writer.write(head)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if upstream_writer is not None:
                upstream_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()
