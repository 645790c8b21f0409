"""The SSE reader of the provider client: the event stream format as the spec has it
(every line ending, comments, multi-line data, fields without a value), however the
bytes are split across reads; and the read-ahead flag that lets a writer coalesce."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from corral.config.schema import ProviderConfig
from corral.llm.providers._http import HttpClient, ServerSentEvent
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


def client() -> HttpClient:
    return HttpClient("p", ProviderConfig(type="openai", api_key="k"), base_url="http://127.0.0.1:1",
                      headers={}, api_key="k")


async def events_of(pieces: list[bytes], ahead: ReadAhead | None = None) -> list[tuple[ServerSentEvent, bool]]:
    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream())
    http = client()
    return [(event, ahead.more if ahead else False) async for event in http.sse(response, ahead)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
async def test_every_line_ending_and_every_split(ending: bytes) -> None:
    wire = WIRE.replace(b"\n", ending)
    for cut in range(1, len(wire)):
        got = [event for event, _ in await events_of([wire[:cut], wire[cut:]])]
        assert got == EXPECTED, (ending, cut)
    byte_by_byte = [wire[i:i + 1] for i in range(len(wire))]
    assert [event for event, _ in await events_of(byte_by_byte)] == EXPECTED


async def test_a_last_event_without_its_blank_line_is_still_delivered() -> None:
    got = await events_of([b"data: one\n\ndata: two\n"])
    assert [event.data for event, _ in got] == ["one", "two"]


async def test_read_ahead_is_set_while_the_same_read_holds_more_events() -> None:
    ahead = ReadAhead()
    first_read = b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    got = await events_of([first_read, b"data: 4\n\n"], ahead)
    assert [(event.data, more) for event, more in got] == [("1", True), ("2", True), ("3", False), ("4", False)]
    assert ahead.more is False


async def test_read_ahead_is_cleared_when_the_consumer_stops_early() -> None:
    ahead = ReadAhead()

    async def stream() -> AsyncIterator[bytes]:
        yield b"data: 1\n\ndata: 2\n\ndata: 3\n\n"

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream())
    events = client().sse(response, ahead)
    first = await events.__anext__()
    assert first.data == "1" and ahead.more is True
    await events.aclose()  # e.g. a tool call ended the turn
    assert ahead.more is False
