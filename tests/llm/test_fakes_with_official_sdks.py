"""The fakes are faithful: the vendors' official SDKs parse everything they send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from corral.testing.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, Reply, ReplyToolCall

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


async def test_openai_sdk_parses_a_completion_with_usage() -> None:
    async with FakeOpenAI(Reply(text="Hi there", input_tokens=30, cached_tokens=20, reasoning_tokens=2)) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-x", max_retries=0)
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        await client.close()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 30
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 20
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 2


async def test_openai_sdk_streams_parallel_tool_calls_and_the_usage_chunk() -> None:
    reply = Reply.tools(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}))
    async with FakeOpenAI(reply) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-x", max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "weather in Paris and Rome"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
    assert len({c.id for c in chunks}) == 1
    arguments: dict[int, str] = {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        for call in chunk.choices[0].delta.tool_calls or []:
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "" if call.function else "")
    assert arguments == {0: '{"city": "Paris"}', 1: '{"city": "Rome"}'}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


async def test_openai_sdk_embeddings_models_and_typed_errors() -> None:
    async with FakeOpenAI(Reply.error(429, "Rate limit reached", retry_after=3), api_key="sk-good") as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-good", max_retries=0)
        # The SDK asks for base64 by default and decodes it.
        embeddings = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        models = await client.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        await client.close()
        bad = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        await bad.close()
    assert fake.requests[0].body["encoding_format"] == "base64"
    assert [len(e.embedding) for e in embeddings.data] == [8, 8]
    assert embeddings.data[0].embedding != embeddings.data[1].embedding
    assert [m.id for m in models.data] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == "Rate limit reached"
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


async def test_anthropic_sdk_parses_messages_thinking_and_tool_use() -> None:
    reply = Reply(text="Let me check.", reasoning="need weather",
                  tool_calls=[ReplyToolCall("get_weather", {"city": "Paris"})], cached_tokens=5, input_tokens=15)
    async with FakeAnthropic(reply) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="sk-ant", max_retries=0)
        message = await client.messages.create(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
        )
        await client.close()
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    tool_use = message.content[2]
    assert isinstance(tool_use, anthropic.types.ToolUseBlock)
    assert (tool_use.name, tool_use.input) == ("get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (10, 5)


async def test_anthropic_sdk_accumulates_the_stream() -> None:
    reply = Reply(text="Two tools:", reasoning="plan it", tool_calls=[ReplyToolCall("a", {"x": 1}), ReplyToolCall("b", {})])
    async with FakeAnthropic(reply) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="sk-ant", max_retries=0)
        async with client.messages.stream(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "go"}]
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        await client.close()
    assert kinds[0] == "message_start" and "message_stop" in kinds
    thinking, text = final.content[0], final.content[1]
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert (thinking.thinking, thinking.signature) == ("plan it", "sig-fake")
    assert isinstance(text, anthropic.types.TextBlock) and text.text == "Two tools:"
    inputs = [(b.name, b.input) for b in final.content if isinstance(b, anthropic.types.ToolUseBlock)]
    assert inputs == [("a", {"x": 1}), ("b", {})]
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 1


async def test_anthropic_sdk_typed_errors_and_models() -> None:
    async with FakeAnthropic(Reply.error(529, "Overloaded"), Reply.error(429, "slow", retry_after=2)) as fake:
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="sk-ant", max_retries=0)
        args = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await client.messages.create(**args)  # type: ignore[call-overload]
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(**args)  # type: ignore[call-overload]
        page = await client.models.list()
        await client.close()
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value.body, dict)
    assert overloaded.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert limited.value.response.headers["retry-after"] == "2"
    assert [m.id for m in page.data] == ["claude-3-5-haiku-latest", "claude-sonnet-4-5"]


@asynccontextmanager
async def gemini_client(fake: FakeGemini, key: str = "g-key") -> AsyncIterator[genai.Client]:
    options = genai_types.HttpOptions(base_url=fake.url, api_version="v1beta")
    client = genai.Client(api_key=key, http_options=options)
    try:
        yield client
    finally:
        await client.aio.aclose()
        client.close()


async def test_gemini_sdk_parses_content_function_calls_and_usage() -> None:
    reply = Reply(text="Checking", tool_calls=[ReplyToolCall("get_weather", {"city": "Oslo"})],
                  input_tokens=12, cached_tokens=4, reasoning_tokens=3, output_tokens=10)
    async with FakeGemini(reply, api_key="g-key") as fake:
        async with gemini_client(fake) as client:
            response = await client.aio.models.generate_content(model="gemini-2.0-flash", contents="weather in Oslo?")
    assert response.text == "Checking"
    assert response.function_calls is not None
    assert [(c.name, c.args) for c in response.function_calls] == [("get_weather", {"city": "Oslo"})]
    assert response.candidates is not None and response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.cached_content_token_count, usage.thoughts_token_count) == (12, 4, 3)
    assert usage.candidates_token_count == 7
    assert fake.last_request.headers["x-goog-api-key"] == "g-key"


async def test_gemini_sdk_streams_and_embeds() -> None:
    async with FakeGemini(Reply(text="one two three"), api_key="g-key") as fake:
        async with gemini_client(fake) as client:
            stream = await client.aio.models.generate_content_stream(model="gemini-2.0-flash", contents="count")
            texts = [chunk.text async for chunk in stream]
            embedded = await client.aio.models.embed_content(model="text-embedding-004", contents=["a", "b"])
    assert "".join(t or "" for t in texts) == "one two three"
    assert fake.requests[0].query.get("alt") == "sse"
    assert embedded.embeddings is not None and len(embedded.embeddings) == 2


async def test_gemini_sdk_sees_a_bad_key_as_the_real_api_reports_it() -> None:
    async with FakeGemini(api_key="g-key") as fake:
        async with gemini_client(fake, key="wrong") as client:
            with pytest.raises(genai_errors.ClientError) as caught:
                await client.aio.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"


def test_sync_context_manager_serves_plain_http_clients() -> None:
    with FakeOpenAI(Reply(text="sync ok")) as fake:
        response = httpx.post(
            f"{fake.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=5,
        )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "sync ok"
    assert fake.last_request.body["model"] == "m"
