"""What the Anthropic adapter sends: system split out, tool_use / tool_result blocks,
headers, the max_tokens default; and stream-level error events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
from corral.llm.registry import build_provider
from corral.llm.types import ChatRequest, ImagePart, Message, StreamAccumulator, TextPart, ToolCall, ToolSpec
from corral.testing.fakes import FakeAnthropic, Reply

KEY = "sk-ant-test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as running:
        yield running


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.reset()
    server.api_key = KEY
    return server


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    built = build_provider("anthropic", ProviderConfig(type="anthropic", base_url=fake.base_url, api_key=KEY))
    assert isinstance(built, AnthropicProvider)
    yield built
    await built.aclose()


def conversation() -> list[Message]:
    return [
        Message.text("system", "Be brief."),
        Message.text("system", "Answer in English."),
        Message(role="user", content=[TextPart("Weather?"), ImagePart("data:image/jpeg;base64,QUJD")]),
        Message(role="assistant", content=[TextPart("Checking.")], tool_calls=[
            ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), ToolCall("toolu_2", "get_time", "{}"),
        ]),
        Message(role="tool", content=[TextPart("sunny")], tool_call_id="toolu_1"),
        Message(role="tool", content=[TextPart("noon")], tool_call_id="toolu_2"),
    ]


async def test_request_splits_system_and_encodes_tool_blocks(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    await provider.complete(ChatRequest(
        model="claude-x",
        messages=conversation(),
        tools=[ToolSpec("get_weather", "Weather", {"type": "object", "properties": {}})],
        tool_choice="required",
        parallel_tool_calls=False,
        stop=["END"],
        user="u-9",
    ))
    sent = fake.last_request
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.body
    assert body["system"] == "Be brief.\n\nAnswer in English."
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
        ]},
    ]
    assert body["tools"] == [{"name": "get_weather", "description": "Weather",
                              "input_schema": {"type": "object", "properties": {}}}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-9"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("none", {"type": "none"}), ("get_weather", {"type": "tool", "name": "get_weather"})],
)
async def test_tool_choice_mapping(
    fake: FakeAnthropic, provider: AnthropicProvider, choice: str, expected: dict[str, str]
) -> None:
    tools = [ToolSpec("get_weather")]
    await provider.complete(ChatRequest(model="c", messages=[Message.text("user", "hi")], tools=tools,
                                        tool_choice=choice, max_tokens=64))
    assert fake.last_request.body["tool_choice"] == expected
    assert fake.last_request.body["max_tokens"] == 64


async def test_configured_api_version_is_sent(fake: FakeAnthropic) -> None:
    config = ProviderConfig(type="anthropic", base_url=fake.base_url, api_key=KEY, api_version="2024-01-01")
    provider = build_provider("a", config)
    await provider.complete(ChatRequest(model="c", messages=[Message.text("user", "hi")]))
    await provider.aclose()
    assert fake.last_request.headers["anthropic-version"] == "2024-01-01"


async def test_overloaded_error_event_mid_stream_is_upstream_unavailable(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    frames = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
        b'"role":"assistant","model":"c","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    fake.add(Reply(raw_body=frames, content_type="text/event-stream"))
    with pytest.raises(errors.UpstreamUnavailableError, match="Overloaded") as caught:
        _ = [e async for e in provider.stream(ChatRequest(model="c", messages=[Message.text("user", "hi")]))]
    assert caught.value.upstream_status == 529


async def test_embed_is_a_clear_bad_request(provider: AnthropicProvider) -> None:
    with pytest.raises(errors.BadRequestError, match="no embeddings endpoint"):
        await provider.embed(["x"], "any")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_structured_output_rides_on_a_forced_tool_and_returns_text(
    fake: FakeAnthropic, provider: AnthropicProvider, stream: bool
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    fake.add(Reply.tools(("structured_output", {"answer": 42})))
    request = ChatRequest(model="c", messages=[Message.text("user", "6*7?")],
                          response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    if stream:
        acc = StreamAccumulator()
        async for event in provider.stream(request):
            acc.add(event)
        result = acc.result()
    else:
        result = await provider.complete(request)
    assert json.loads(result.message.text_content) == {"answer": 42}
    assert result.message.tool_calls == []
    assert result.finish_reason == "stop"
    body = fake.last_request.body
    assert body["tools"][-1]["name"] == "structured_output" and body["tools"][-1]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": "structured_output"}


async def test_foreign_tool_ids_are_made_valid_consistently(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    gemini_id = "call_0_lookup~sig~c2ln+/="
    history = [
        Message.text("user", "look it up"),
        Message(role="assistant", tool_calls=[ToolCall(gemini_id, "lookup", "{}"), ToolCall("fc.7 x", "other", "{}")]),
        Message(role="tool", content=[TextPart("found")], tool_call_id=gemini_id),
        Message(role="tool", content=[TextPart("done")], tool_call_id="fc.7 x"),
    ]
    await provider.complete(ChatRequest(model="c", messages=history))
    turns = fake.last_request.body["messages"]
    assert [b["id"] for b in turns[1]["content"]] == ["call_0_lookup", "fc_7_x"]
    assert [b["tool_use_id"] for b in turns[2]["content"]] == ["call_0_lookup", "fc_7_x"]
