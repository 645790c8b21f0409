"""Upstream connection pooling: a finished stream hands its connection back to the
pool (closing a response before its end would drop the connection, and every streamed
request would pay a new connect and, against a real provider, a TLS handshake); and a
pooled connection the upstream closed while idle is noticed and replaced, not used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from corral.config.schema import ProviderConfig
from corral.llm.registry import build_provider
from corral.llm.types import ChatRequest, FinishEvent, Message, TextDelta

STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


class CountingUpstream:
    """Keep-alive HTTP/1.1 server that answers every request with STREAM and counts connections."""

    def __init__(self, close_after_each: bool = False) -> None:
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             + f"content-length: {len(STREAM)}\r\n\r\n".encode() + STREAM)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[CountingUpstream]:
    counting = CountingUpstream()
    counting.server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    counting.port = counting.server.sockets[0].getsockname()[1]
    async with counting.server:
        yield counting


async def test_sequential_streams_share_one_upstream_connection(upstream: CountingUpstream) -> None:
    config = ProviderConfig(type="openai-compatible", base_url=f"http://127.0.0.1:{upstream.port}/v1", api_key="sk-x")
    provider = build_provider("stub", config)
    try:
        for _ in range(5):
            events = [e async for e in provider.stream(ChatRequest(model="m", messages=[Message.text("user", "hi")]))]
            assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi"]
            assert isinstance(events[-1], FinishEvent) and events[-1].reason == "stop"
    finally:
        await provider.aclose()
    assert upstream.requests == 5
    assert upstream.connections == 1


async def test_a_connection_the_upstream_closed_while_idle_is_replaced() -> None:
    counting = CountingUpstream(close_after_each=True)
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = ProviderConfig(type="openai-compatible", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-x")
    provider = build_provider("stub", config)
    try:
        async with server:
            for _ in range(3):
                request = ChatRequest(model="m", messages=[Message.text("user", "hi")])
                events = [e async for e in provider.stream(request)]
                assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi"]
                await asyncio.sleep(0.05)  # the close reaches the client's idle socket
    finally:
        await provider.aclose()
    assert counting.requests == 3
    assert counting.connections == 3
