"""Loopback fakes for the boot tests.

The local Postgres uses trust auth and the local Redis has no password, so neither can
produce "wrong password" or "starting up". These fakes speak just enough of each wire
protocol to answer every connection with the server's documented error:
Postgres ErrorResponse (SQLSTATE 28P01 / 57P03) and Redis ``-WRONGPASS`` / ``-LOADING``.
The HTTP fakes stand in for Qdrant, Chroma and a service that is slow to become healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import pytest

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_error(code: str, message: str) -> bytes:
    fields = b"".join(tag + value.encode() + b"\0" for tag, value in
                      ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message)))
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


@asynccontextmanager
async def fake_postgres(code: str, message: str) -> AsyncIterator[int]:
    """A server answering every startup with one ErrorResponse; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                payload = await reader.readexactly(length - 4)
                (request,) = struct.unpack("!i", payload[:4])
                if request in (SSL_REQUEST, GSSENC_REQUEST):
                    writer.write(b"N")  # no TLS here: the client goes on in plain text
                    await writer.drain()
                    continue
                writer.write(pg_error(code, message))
                await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with serve(handle) as port:
        yield port


@asynccontextmanager
async def fake_redis(reply: bytes) -> AsyncIterator[int]:
    """A server answering every RESP command with `reply` (e.g. b"-WRONGPASS ...")."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readline()
                if not header:
                    break
                for _ in range(int(header[1:].strip() or 0)):
                    size = int((await reader.readline())[1:].strip())
                    await reader.readexactly(size + 2)
                writer.write(reply + b"\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async with serve(handle) as port:
        yield port


HttpHandler = Callable[[str], tuple[int, bytes]]


@asynccontextmanager
async def fake_http(handler: HttpHandler) -> AsyncIterator[tuple[int, list[str]]]:
    """A minimal HTTP/1.1 server: `handler(path) -> (status, body)`. Yields (port, paths seen)."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
            seen.append(path)
            status, body = handler(path)
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with serve(handle) as port:
        yield port, seen


@asynccontextmanager
async def serve(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> AsyncIterator[int]:
    """A loopback server on a free port; on exit every open connection is closed and its
    handler cancelled (asyncio's server.close() leaves both alive before 3.12)."""
    tasks: set[asyncio.Task[Any]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        await handle(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def healthy_after(seconds: float, path: str = "/health") -> HttpHandler:
    """503 until `seconds` have passed since the first request, then 200."""
    first: list[float] = []

    def handler(requested: str) -> tuple[int, bytes]:
        if not first:
            first.append(time.monotonic())
        if requested != path:
            return 404, b"{}"
        if time.monotonic() - first[0] < seconds:
            return 503, b'{"status":"starting"}'
        return 200, b'{"status":"ok"}'

    return handler


@pytest.fixture
def fakes() -> ModuleType:
    """These helpers (with --import-mode=importlib, test modules cannot import a sibling)."""
    return sys.modules[__name__]
