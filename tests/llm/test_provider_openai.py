"""What the OpenAI-compatible adapter sends, and the presets' quirks (Azure, max tokens)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.provider import Provider
from corral.llm.providers.openai import OpenAIProvider
from corral.llm.registry import build_provider
from corral.llm.types import ChatRequest, ImagePart, Message, TextPart, ToolCall, ToolSpec
from corral.testing.fakes import FakeOpenAI, Reply

MakeProvider = Callable[..., Provider]
KEY = "sk-openai-test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as running:
        yield running


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.reset()
    server.api_key = KEY
    return server


def conversation() -> list[Message]:
    return [
        Message.text("system", "Be brief."),
        Message(role="user", content=[TextPart("What is this?"), ImagePart("data:image/png;base64,AAAA", "low")]),
        Message(role="assistant", tool_calls=[ToolCall("call_1", "lookup", '{"q": "cat"}')]),
        Message(role="tool", content=[TextPart("a cat")], tool_call_id="call_1"),
    ]


async def test_request_body_carries_messages_tools_and_options(fake: FakeOpenAI) -> None:
    provider = build_provider("openai", ProviderConfig(type="openai", base_url=fake.base_url, api_key=KEY))
    request = ChatRequest(
        model="gpt-4o-mini",
        messages=conversation(),
        tools=[ToolSpec("lookup", "Look up", {"type": "object", "properties": {"q": {"type": "string"}}})],
        tool_choice="lookup",
        parallel_tool_calls=False,
        temperature=0.2,
        max_tokens=50,
        stop=["END"],
        seed=7,
        user="u-1",
        extra={"logprobs": True},
    )
    await provider.complete(request)
    await provider.aclose()
    sent = fake.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]
    assert body["tools"][0] == {"type": "function", "function": {
        "name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}
    }}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["parallel_tool_calls"] is False
    assert (body["temperature"], body["max_completion_tokens"], body["stop"], body["seed"], body["user"]) == (
        0.2, 50, ["END"], 7, "u-1"
    )
    assert body["logprobs"] is True
    assert "stream" not in body


async def test_stream_asks_for_usage(fake: FakeOpenAI) -> None:
    provider = build_provider("o", ProviderConfig(type="openai", base_url=fake.base_url, api_key=KEY))
    _ = [e async for e in provider.stream(ChatRequest(model="m", messages=[Message.text("user", "hi")]))]
    await provider.aclose()
    assert fake.last_request.body["stream"] is True
    assert fake.last_request.body["stream_options"] == {"include_usage": True}


async def test_compatible_presets_send_max_tokens(fake: FakeOpenAI) -> None:
    provider = build_provider("groq", ProviderConfig(type="groq", base_url=fake.base_url, api_key=KEY))
    await provider.complete(ChatRequest(model="m", messages=[Message.text("user", "hi")], max_tokens=12))
    await provider.aclose()
    assert fake.last_request.body["max_tokens"] == 12
    assert "max_completion_tokens" not in fake.last_request.body


async def test_keyless_local_server_sends_no_authorization(fake: FakeOpenAI) -> None:
    fake.api_key = None
    provider = build_provider("ollama", ProviderConfig(type="ollama", base_url=fake.base_url), env={})
    await provider.complete(ChatRequest(model="llama3", messages=[Message.text("user", "hi")]))
    await provider.aclose()
    assert "authorization" not in fake.last_request.headers


async def test_azure_style_uses_api_key_header_and_api_version(fake: FakeOpenAI) -> None:
    config = ProviderConfig(
        type="azure", base_url=f"{fake.url}/openai/deployments/prod-4o", api_key=KEY, api_version="2024-10-21"
    )
    provider = build_provider("azure", config)
    result = await provider.complete(ChatRequest(model="prod-4o", messages=[Message.text("user", "hi")]))
    sent = fake.last_request
    models = await provider.list_models()
    await provider.aclose()
    assert models and fake.last_request.path == "/openai/models"
    assert fake.last_request.query == {"api-version": "2024-10-21"}
    assert result.message.text_content == "You said: hi"
    assert sent.path == "/openai/deployments/prod-4o/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers


async def test_embed_returns_vectors_in_input_order_and_token_count(fake: FakeOpenAI) -> None:
    provider = OpenAIProvider("o", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    vectors, tokens = await provider.embed(["alpha beta", "gamma"], "text-embedding-3-small")
    again, _ = await provider.embed(["gamma"], "text-embedding-3-small")
    await provider.aclose()
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert vectors[1] == again[0]
    assert vectors[0] != vectors[1]
    assert tokens == 3
    assert fake.last_request.body == {"model": "text-embedding-3-small", "input": ["gamma"], "encoding_format": "float"}


async def test_error_object_inside_a_stream_is_raised(fake: FakeOpenAI) -> None:
    # OpenRouter reports upstream failures as an `error` chunk after a 200.
    body = b'data: {"error": {"message": "upstream overloaded", "code": 503}}\n\n'
    fake.add(Reply(raw_body=body, content_type="text/event-stream"))
    provider = OpenAIProvider("openrouter", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    with pytest.raises(errors.UpstreamUnavailableError, match="upstream overloaded"):
        _ = [e async for e in provider.stream(ChatRequest(model="m", messages=[Message.text("user", "hi")]))]
    await provider.aclose()


async def test_null_choices_usage_chunk_is_tolerated(fake: FakeOpenAI) -> None:
    # vLLM sends `choices: null` on the include_usage chunk.
    frames = (
        b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":null,'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
        b"data: [DONE]\n\n"
    )
    fake.add(Reply(raw_body=frames, content_type="text/event-stream"))
    provider = OpenAIProvider("vllm", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    events = [e async for e in provider.stream(ChatRequest(model="m", messages=[Message.text("user", "hi")]))]
    await provider.aclose()
    assert [type(e).__name__ for e in events] == ["TextDelta", "UsageEvent", "FinishEvent"]


async def test_content_given_as_typed_parts_is_joined(fake: FakeOpenAI) -> None:
    body = (
        b'{"id":"x","object":"chat.completion","model":"magistral","choices":[{"index":0,"finish_reason":"stop",'
        b'"message":{"role":"assistant","content":[{"type":"thinking","thinking":[]},{"type":"text","text":"Hi"},'
        b'{"type":"text","text":" there"}]}}]}'
    )
    fake.add(Reply(raw_body=body, content_type="application/json"))
    provider = OpenAIProvider("mistral", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    result = await provider.complete(ChatRequest(model="m", messages=[Message.text("user", "hi")]))
    await provider.aclose()
    assert result.message.text_content == "Hi there"


async def test_done_without_a_finish_reason_counts_as_stop(fake: FakeOpenAI) -> None:
    frames = b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'
    fake.add(Reply(raw_body=frames, content_type="text/event-stream"))
    provider = OpenAIProvider("llamacpp", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    events = [e async for e in provider.stream(ChatRequest(model="m", messages=[Message.text("user", "hi")]))]
    await provider.aclose()
    assert [type(e).__name__ for e in events] == ["TextDelta", "FinishEvent"]


async def test_tool_choice_is_left_out_when_there_are_no_tools(fake: FakeOpenAI) -> None:
    provider = OpenAIProvider("o", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    await provider.complete(ChatRequest(model="m", messages=[Message.text("user", "hi")], tool_choice="none"))
    await provider.aclose()
    assert "tool_choice" not in fake.last_request.body


async def test_foreign_tool_ids_fit_openai_limits_consistently(fake: FakeOpenAI) -> None:
    gemini_id = "call_0_lookup~sig~" + "A" * 300
    long_id = "x" * 60
    history = [
        Message.text("user", "go"),
        Message(role="assistant", tool_calls=[ToolCall(gemini_id, "lookup", "{}"), ToolCall(long_id, "b", "{}")]),
        Message(role="tool", content=[TextPart("r1")], tool_call_id=gemini_id),
        Message(role="tool", content=[TextPart("r2")], tool_call_id=long_id),
    ]
    provider = OpenAIProvider("o", ProviderConfig(), base_url=fake.base_url, api_key=KEY)
    await provider.complete(ChatRequest(model="m", messages=history))
    await provider.aclose()
    sent = fake.last_request.body["messages"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_0_lookup", "x" * 40]
    assert [sent[2]["tool_call_id"], sent[3]["tool_call_id"]] == ["call_0_lookup", "x" * 40]


@pytest.mark.parametrize(("version", "field"), [("2024-10-21", "max_completion_tokens"), ("2024-06-01", "max_tokens")])
async def test_azure_max_tokens_field_follows_the_api_version(fake: FakeOpenAI, version: str, field: str) -> None:
    config = ProviderConfig(type="azure", base_url=f"{fake.url}/openai/deployments/d", api_key=KEY, api_version=version)
    provider = build_provider("azure", config)
    await provider.complete(ChatRequest(model="d", messages=[Message.text("user", "hi")], max_tokens=5))
    await provider.aclose()
    assert fake.last_request.body[field] == 5
