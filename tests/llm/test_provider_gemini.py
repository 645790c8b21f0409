"""What the Gemini adapter sends: systemInstruction, user/model contents,
functionCall / functionResponse, toolConfig, generationConfig, the key header."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from corral.config.schema import ProviderConfig
from corral.llm.providers.gemini import GeminiProvider
from corral.llm.registry import build_provider
from corral.llm.types import ChatRequest, ImagePart, Message, StreamAccumulator, TextPart, ToolCall, ToolSpec
from corral.testing.fakes import FakeGemini, Reply, ReplyToolCall

KEY = "gemini-test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as running:
        yield running


@pytest.fixture
def fake(server: FakeGemini) -> FakeGemini:
    server.reset()
    server.api_key = KEY
    return server


@pytest.fixture
async def provider(fake: FakeGemini) -> AsyncIterator[GeminiProvider]:
    built = build_provider("gemini", ProviderConfig(type="gemini", base_url=fake.base_url, api_key=KEY))
    assert isinstance(built, GeminiProvider)
    yield built
    await built.aclose()


def conversation() -> list[Message]:
    return [
        Message.text("system", "Be brief."),
        Message(role="user", content=[TextPart("Weather?"), ImagePart("data:image/png;base64,QUJD")]),
        Message(role="assistant", tool_calls=[
            ToolCall("call_0_get_weather", "get_weather", '{"city": "Paris"}'),
            ToolCall("call_1_get_time", "get_time", "{}"),
        ]),
        Message(role="tool", content=[TextPart("sunny")], tool_call_id="call_0_get_weather"),
        Message(role="tool", content=[TextPart('{"time": "noon"}')], tool_call_id="call_1_get_time"),
    ]


async def test_request_body_uses_gemini_shapes(fake: FakeGemini, provider: GeminiProvider) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False,
              "$schema": "http://json-schema.org/draft-07/schema#"}
    await provider.complete(ChatRequest(
        model="gemini-2.0-flash",
        messages=conversation(),
        tools=[ToolSpec("get_weather", "Weather", schema)],
        tool_choice="get_weather",
        temperature=0.1,
        max_tokens=99,
        stop=["END"],
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    ))
    sent = fake.last_request
    assert sent.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert "key" not in sent.query
    body = sent.body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/png", "data": "QUJD"}}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
            {"functionResponse": {"name": "get_time", "response": {"time": "noon"}}},
        ]},
    ]
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    ]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert body["generationConfig"] == {
        "temperature": 0.1, "maxOutputTokens": 99, "stopSequences": ["END"],
        "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
    }


async def test_stream_uses_sse_endpoint(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.add(Reply(text="a b c"))
    events = [e async for e in provider.stream(ChatRequest(model="models/gemini-2.0-flash",
                                                           messages=[Message.text("user", "hi")]))]
    sent = fake.last_request
    assert sent.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    assert type(events[-1]).__name__ == "FinishEvent"


@pytest.mark.parametrize("issued_id", [None, "fc-7x"], ids=["no-id", "gemini-id"])
async def test_tool_call_round_trip_names_the_function(
    fake: FakeGemini, provider: GeminiProvider, issued_id: str | None
) -> None:
    fake.add(Reply.tools(ReplyToolCall("get_time", {"tz": "UTC"}, id=issued_id)))
    result = await provider.complete(ChatRequest(model="gemini-2.0-flash", messages=[Message.text("user", "time?")]))
    call = result.message.tool_calls[0]
    assert (call.name, call.parsed_arguments()) == ("get_time", {"tz": "UTC"})
    assert call.id == (issued_id or call.id) and call.id
    follow_up = [Message.text("user", "time?"), result.message,
                 Message(role="tool", content=[TextPart("noon")], tool_call_id=call.id)]
    await provider.complete(ChatRequest(model="gemini-2.0-flash", messages=follow_up))
    contents = fake.last_request.body["contents"]
    id_field = {"id": issued_id} if issued_id else {}
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_time", "args": {"tz": "UTC"}, **id_field}}
    ]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}, **id_field}}
    ]}


async def test_embed_uses_batch_embed_contents(fake: FakeGemini, provider: GeminiProvider) -> None:
    vectors, tokens = await provider.embed(["alpha", "beta"], "text-embedding-004")
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    assert tokens == 0
    sent = fake.last_request
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.body == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "alpha"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "beta"}]}},
    ]}


async def test_list_models_reports_token_limits(provider: GeminiProvider) -> None:
    models = {m.id: m for m in await provider.list_models()}
    assert models["gemini-2.0-flash"].context_window == 1048576
    assert models["gemini-2.0-flash"].max_output_tokens == 8192


async def test_blocked_prompt_finishes_as_content_filter(fake: FakeGemini, provider: GeminiProvider) -> None:
    blocked = b'{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}'
    fake.add(Reply(raw_body=blocked, content_type="application/json"))
    result = await provider.complete(ChatRequest(model="g", messages=[Message.text("user", "bad")]))
    assert result.finish_reason == "content_filter"
    assert result.usage.input_tokens == 4


async def test_embed_splits_large_inputs_into_batches_of_100(fake: FakeGemini, provider: GeminiProvider) -> None:
    texts = [f"text {i}" for i in range(230)]
    vectors, _ = await provider.embed(texts, "text-embedding-004")
    assert len(vectors) == 230
    assert [len(r.body["requests"]) for r in fake.requests] == [100, 100, 30]
    single, _ = await provider.embed(["text 229"], "text-embedding-004")
    assert vectors[229] == single[0]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_gemini_3_call_signatures_travel_back_with_the_calls(
    fake: FakeGemini, provider: GeminiProvider, stream: bool
) -> None:
    fake.add(Reply.tools(ReplyToolCall("a", {"x": 1}, signature="c2lnLWE="), ReplyToolCall("b", {})))
    request = ChatRequest(model="gemini-3-pro-preview", messages=[Message.text("user", "go")])
    if stream:
        acc = StreamAccumulator()
        async for event in provider.stream(request):
            acc.add(event)
        answer = acc.result().message
    else:
        answer = (await provider.complete(request)).message
    results = [Message(role="tool", content=[TextPart("ok")], tool_call_id=c.id) for c in answer.tool_calls]
    await provider.complete(ChatRequest(model="gemini-3-pro-preview",
                                        messages=[Message.text("user", "go"), answer, *results]))
    contents = fake.last_request.body["contents"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "c2lnLWE="},
        {"functionCall": {"name": "b", "args": {}}},
    ]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["a", "b"]


async def test_unsigned_calls_get_the_documented_stand_in_on_gemini_3(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    history = [
        Message.text("user", "go"),
        Message(role="assistant", tool_calls=[ToolCall("toolu_1", "a", "{}"), ToolCall("toolu_2", "b", "{}")]),
        Message(role="tool", content=[TextPart("ok")], tool_call_id="toolu_1"),
        Message(role="tool", content=[TextPart("ok")], tool_call_id="toolu_2"),
    ]
    await provider.complete(ChatRequest(model="gemini-3-flash", messages=history))
    model_turn = fake.last_request.body["contents"][1]["parts"]
    assert model_turn[0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in model_turn[1]
    await provider.complete(ChatRequest(model="gemini-2.5-flash", messages=history))
    assert all("thoughtSignature" not in p for p in fake.last_request.body["contents"][1]["parts"])
