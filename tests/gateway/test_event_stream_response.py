"""`EventStreamResponse` on the ASGI interface itself: the first chunk at once, then one
send per upstream read when the source says more events are in memory, one per chunk
otherwise, and a client that
goes away ends the iteration (its `finally` runs) without an error escaping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from corral.gateway.streaming import EventStreamResponse
from corral.llm.readahead import ReadAhead


class Client:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def test_chunks_of_one_read_go_out_in_one_send() -> None:
    ahead = ReadAhead()

    async def source() -> AsyncIterator[bytes]:
        for read in ([b"a", b"b", b"c"], [b"d"], [b"e", b"f"]):  # three upstream reads
            for index, chunk in enumerate(read):
                ahead.more = index < len(read) - 1
                yield chunk
            ahead.more = False
            await asyncio.sleep(0)

    client = Client()
    await EventStreamResponse(source(), ahead=ahead)({"type": "http"}, client.receive, client.send)
    assert client.sent[0]["type"] == "http.response.start" and client.sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in client.sent[0]["headers"]
    assert client.bodies() == [b"a", b"bc", b"d", b"ef", b""]  # the first chunk at once
    assert client.sent[-1]["more_body"] is False


async def test_without_read_ahead_every_chunk_is_sent_at_once() -> None:
    async def source() -> AsyncIterator[bytes]:
        for chunk in (b"1", b"2", b"3"):
            yield chunk

    client = Client()
    await EventStreamResponse(source())({"type": "http"}, client.receive, client.send)
    assert client.bodies() == [b"1", b"2", b"3", b""]


async def test_a_client_that_leaves_ends_the_iteration_quietly() -> None:
    closed: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            for n in range(1000):
                yield b"%d" % n
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            closed.append("cancelled")
            raise
        finally:
            closed.append("finally")

    client = Client()
    response = asyncio.create_task(EventStreamResponse(source())({"type": "http"}, client.receive, client.send))
    await asyncio.sleep(0.05)
    client.leave.set()
    await asyncio.wait_for(response, 2)  # returns normally: no CancelledError escapes
    assert closed == ["cancelled", "finally"]
    assert 1 < len(client.bodies()) < 100
    assert not response.cancelled() and response.exception() is None


async def test_a_client_that_leaves_while_the_source_records_its_call_does_not_interrupt_it() -> None:
    """Once the source says it is settling (closing the upstream, recording usage), a
    disconnect no longer cancels it: its awaits run to their end, unshielded."""
    ahead = ReadAhead()
    client = Client()
    recorded: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"only"
        finally:
            ahead.settling = True
            client.leave.set()  # the client goes away just as the call is being recorded
            await asyncio.sleep(0.05)  # a recording that has to wait (a Redis counter, say)
            recorded.append("recorded")

    response = asyncio.create_task(EventStreamResponse(source(), ahead=ahead)({"type": "http"}, client.receive,
                                                                               client.send))
    await asyncio.wait_for(response, 2)
    assert recorded == ["recorded"]
    assert response.exception() is None
    assert client.bodies() == [b"only", b""]
