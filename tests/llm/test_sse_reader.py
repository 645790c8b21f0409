"""The SSE reader of the provider client: the event stream format as the spec has it
(every line ending, comments, multi-line data, fields without a value), however the
bytes are split across reads (`EventParser`); and, over the real wire, the read-ahead
flag that lets a writer coalesce."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.llm.loopback import Upstream, read_request

from corral.config.schema import ProviderConfig
from corral.llm.providers._http import EventParser, HttpClient, ServerSentEvent
from corral.llm.readahead import ReadAhead

WIRE = (
    b": a comment first\n"
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b"data: line one\ndata:line two\n\n"
    b"event: ping\n\n"  # no data: no event
    b"data\n\n"  # the field alone: one empty data line
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ServerSentEvent("message_start", '{"a": 1}'),
    ServerSentEvent(None, "line one\nline two"),
    ServerSentEvent(None, ""),
    ServerSentEvent(None, "[DONE]"),
]


def parse(pieces: list[bytes]) -> list[ServerSentEvent]:
    parser = EventParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    last = parser.finish()
    return events if last is None else [*events, last]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_and_every_split(ending: bytes) -> None:
    wire = WIRE.replace(b"\n", ending)
    for cut in range(1, len(wire)):
        assert parse([wire[:cut], wire[cut:]]) == EXPECTED, (ending, cut)
    assert parse([wire[i:i + 1] for i in range(len(wire))]) == EXPECTED


def test_a_last_event_without_its_blank_line_is_still_delivered() -> None:
    assert [event.data for event in parse([b"data: one\n\ndata: two\n"])] == ["one", "two"]


@pytest.fixture
async def reads() -> AsyncIterator[tuple[HttpClient, list[bytes], asyncio.Event]]:
    """A provider client and an upstream that sends each item of `writes` as one write,
    the next one only once `gate` is set (so a write is one read at the client)."""
    writes: list[bytes] = []
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for index, data in enumerate(writes):
            if index:
                await gate.wait()
                gate.clear()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    upstream = await Upstream(handler).start()
    http = HttpClient("p", ProviderConfig(type="openai", api_key="k"), base_url=f"http://127.0.0.1:{upstream.port}",
                      headers={}, api_key="k")
    yield http, writes, gate
    await http.aclose()
    await upstream.stop()


async def test_read_ahead_is_set_while_the_same_read_holds_more_events(reads) -> None:
    http, writes, gate = reads
    writes += [b"data: 1\n\ndata: 2\n\n: keep-alive\n\ndata: 3\n\n: ping\n\n", b"data: 4\n\n"]
    ahead = ReadAhead()
    got = []
    async with http.open("POST", "/", json_body={}) as response:
        async for event in http.sse(response, ahead):
            got.append((event.data, ahead.more))
            gate.set()  # the second write only after the first read's events were taken
    # "3" is the last event of its read (a comment after it is not one): nothing is held for it
    assert got == [("1", True), ("2", True), ("3", False), ("4", False)]
    assert ahead.more is False


async def test_read_ahead_is_cleared_when_the_consumer_stops_early(reads) -> None:
    http, writes, _ = reads
    writes += [b"data: 1\n\ndata: 2\n\ndata: 3\n\n"]
    ahead = ReadAhead()
    async with http.open("POST", "/", json_body={}) as response:
        events = http.sse(response, ahead)
        first = await events.__anext__()
        assert first.data == "1" and ahead.more is True
        await events.aclose()  # e.g. a tool call ended the turn
        assert ahead.more is False
