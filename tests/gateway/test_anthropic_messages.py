"""`/v1/messages` against the official `anthropic` SDK over a real loopback server."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from corral.config.schema import CorralConfig, ModelConfig, ScriptStep
from corral.gateway.app import create_app
from corral.llm.errors import UpstreamUnavailableError
from corral.llm.types import ImagePart, TextDelta
from corral.testing.server import serve_app

NO_RETRIES = {"models": {"scripted": ModelConfig(provider="script", model="scripted", num_retries=0)}}


@pytest.fixture
async def client():
    made: list[anthropic.AsyncAnthropic] = []

    def make(base_url: str) -> anthropic.AsyncAnthropic:
        made.append(anthropic.AsyncAnthropic(base_url=base_url, api_key="unused", max_retries=0))
        return made[-1]

    yield make
    for sdk in made:
        await sdk.close()


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_non_stream_message_has_text_block_end_turn_usage_and_overhead_header(client, scripted_server) -> None:
    steps = [ScriptStep(text="Hello from Corral", usage={"input_tokens": 12, "output_tokens": 4})]
    async with scripted_server(steps) as (base_url, provider):
        raw = await client(base_url).messages.with_raw_response.create(
            model="scripted", max_tokens=100, system="Be brief.",
            messages=[{"role": "user", "content": "hi"}], stop_sequences=["END"], extra_body={"temperature": 0.5},
        )
        message = await raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello from Corral")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)
    assert float(raw.headers["x-corral-overhead-ms"]) >= 0
    sent = provider.requests[0]
    assert [(m.role, m.text_content) for m in sent.messages] == [("system", "Be brief."), ("user", "hi")]
    assert (sent.max_tokens, sent.stop, sent.temperature) == (100, ["END"], 0.5)


async def test_stream_events_follow_documented_order_with_cumulative_usage(client, scripted_server) -> None:
    steps = [ScriptStep(text="one two three", usage={"input_tokens": 9, "output_tokens": 3})]
    async with scripted_server(steps) as (base_url, _), client(base_url).messages.stream(
        model="scripted", max_tokens=50, messages=[{"role": "user", "content": "count"}]
    ) as stream:
        kinds = [event.type async for event in stream if event.type not in ("text",)]
        final = await stream.get_final_message()
    assert kinds == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 3)


async def test_stream_wire_has_event_lines_matching_type_and_block_indexes(scripted_server) -> None:
    steps = [ScriptStep(text="a b", tool_calls=[{"name": "f", "arguments": {"x": 1}},
                                                {"name": "g", "arguments": {"y": 2}}])]
    async with scripted_server(steps) as (base_url, _), httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/messages", json={
            "model": "scripted", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "go"}]})
    events = sse_events(response.text)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"]["content"] == []
    starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    assert stops == [0, 1, 2]
    partial = {d["index"]: d["delta"]["partial_json"] for n, d in events
               if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"}
    assert partial == {1: '{"x":1}', 2: '{"y":2}'}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert [n for n, _ in events[-2:]] == ["message_delta", "message_stop"]


async def test_tools_round_trip_tool_use_and_tool_result_blocks(client, scripted_server) -> None:
    steps = [ScriptStep(tool_calls=[{"id": "toolu_1", "name": "get_weather", "arguments": {"city": "Oslo"}}]),
             ScriptStep(text="It is sunny.")]
    tools = [{"name": "get_weather", "description": "Weather by city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with scripted_server(steps) as (base_url, provider):
        sdk = client(base_url)
        first = await sdk.messages.create(model="scripted", max_tokens=100, tools=tools,
                                          tool_choice={"type": "any"},
                                          messages=[{"role": "user", "content": "weather in Oslo?"}])
        tool_use = first.content[0]
        second = await sdk.messages.create(model="scripted", max_tokens=100, tools=tools, messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny, 21C"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
        ])
    assert first.stop_reason == "tool_use"
    assert (tool_use.type, tool_use.id, tool_use.name, tool_use.input) == ("tool_use", "toolu_1", "get_weather",
                                                                           {"city": "Oslo"})
    assert second.content[0].text == "It is sunny."
    assert provider.requests[0].tools[0].name == "get_weather"
    assert provider.requests[0].tool_choice == "required"
    history = provider.requests[1].messages
    assert [m.role for m in history] == ["user", "assistant", "tool", "user"]
    assert history[1].tool_calls[0].parsed_arguments() == {"city": "Oslo"}
    assert (history[2].tool_call_id, history[2].text_content) == ("toolu_1", "sunny, 21C")
    assert history[3].content == [ImagePart(url="data:image/png;base64,iVBORw0KGgo=")]


async def test_stream_tool_use_accumulates_into_parsed_input(client, scripted_server) -> None:
    steps = [ScriptStep(tool_calls=[{"id": "toolu_9", "name": "lookup", "arguments": {"q": "corral"}}])]
    async with scripted_server(steps) as (base_url, _), client(base_url).messages.stream(
        model="scripted", max_tokens=50, messages=[{"role": "user", "content": "find"}],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "lookup", {"q": "corral"})]


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"model": "scripted", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "scripted", "max_tokens": 5, "temperature": 3, "messages": [{"role": "user", "content": "x"}]},
     "temperature"),
    ({"model": "scripted", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
     "audio"),
])
async def test_invalid_requests_are_400_invalid_request_error_in_anthropic_format(
    client, scripted_server, payload, fragment
) -> None:
    async with scripted_server() as (base_url, provider), httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/messages", json=payload)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]
    assert provider.requests == []


async def test_errors_become_typed_sdk_exceptions(client, scripted_server) -> None:
    steps = [ScriptStep(error="rate_limit"), ScriptStep(error="unavailable"), ScriptStep(error="authentication")]
    async with scripted_server(steps, **NO_RETRIES) as (base_url, _):
        sdk = client(base_url)
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(anthropic.NotFoundError) as missing:
            await sdk.messages.create(model="nope", max_tokens=5, messages=messages)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await sdk.messages.create(model="scripted", max_tokens=5, messages=messages)
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await sdk.messages.create(model="scripted", max_tokens=5, messages=messages, stream=True)
        with pytest.raises(anthropic.AuthenticationError):
            await sdk.messages.create(model="scripted", max_tokens=5, messages=messages)
    assert missing.value.body["error"]["type"] == "not_found_error"
    assert limited.value.response.headers["retry-after"] == "1"
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


async def test_unknown_route_under_messages_uses_anthropic_error_format(scripted_server) -> None:
    async with scripted_server() as (base_url, _), httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/v1/messages")
    assert response.status_code == 405
    assert response.json()["type"] == "error"


async def test_count_tokens_estimates_input_tokens(client, scripted_server) -> None:
    async with scripted_server() as (base_url, _):
        counted = await client(base_url).messages.count_tokens(
            model="scripted", messages=[{"role": "user", "content": "x" * 40}], system="y" * 8)
    assert counted.input_tokens == 12


class BreaksMidStream:
    """An upstream that sends some text, then fails: the status is already 200."""

    name = "script"

    async def stream(self, request, *, read_ahead=None):
        yield TextDelta("partial")
        raise UpstreamUnavailableError("connection reset", provider="script")

    async def complete(self, request):
        raise AssertionError("not used")

    async def list_models(self):
        return []

    async def embed(self, texts, model):
        raise AssertionError("not used")

    async def aclose(self) -> None:
        return None


async def test_failure_after_output_is_an_in_stream_error_event() -> None:
    config = CorralConfig.model_validate({"providers": {"script": {"type": "scripted"}},
                                          "models": {"m": {"provider": "script", "model": "x", "num_retries": 0}}})
    app = create_app(config, providers={"script": BreaksMidStream()})
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/messages", json={
            "model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "go"}]})
    assert response.status_code == 200
    events = sse_events(response.text)
    assert [n for n, _ in events][:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    name, data = events[-1]
    assert name == "error"
    assert data["error"]["type"] == "overloaded_error"
    assert "connection reset" in data["error"]["message"]
