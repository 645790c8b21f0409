"""Anthropic Messages through Corral to an Anthropic upstream: every field the upstream
takes arrives as the client sent it (thinking with signatures replayed with tool use,
cache breakpoints on system, tools and messages, images in tool results, effort and
thinking budgets), and the answer's signatures come back to the client. Cross-vendor,
what has an equivalent is translated and what has none is refused by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import pytest

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.testing.fakes import FakeAnthropic, FakeOpenAI, Reply
from corral.testing.server import serve_app

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
CACHE = {"type": "ephemeral"}


@asynccontextmanager
async def gateway_to(fake: FakeAnthropic | FakeOpenAI, wire: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    config = CorralConfig.model_validate({
        "providers": {"up": {"type": wire, "base_url": fake.base_url,
                             "api_key": "sk-up"}},
        "models": {"claude": {"provider": "up", "model": "claude-sonnet-4-5", "num_retries": 0}},
        "verification": {"enabled": False},
    })
    async with serve_app(create_app(config)) as url:
        async with anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as client:
            yield client


def tool_turns() -> list[dict[str, object]]:
    """A conversation with a signed thinking block before a tool call, and a screenshot
    tool result with a cache breakpoint."""
    return [
        {"role": "user", "content": [{"type": "text", "text": "look at the screen", "cache_control": CACHE}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should take a screenshot.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "opaque-bytes"},
            {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "cache_control": CACHE,
                                      "content": [{"type": "text", "text": "the screen:"},
                                                  {"type": "image", "source": {"type": "base64",
                                                                               "media_type": "image/png",
                                                                               "data": PNG}}]}]},
    ]


TOOLS = [{"name": "screenshot", "description": "Take a screenshot", "input_schema": {"type": "object"},
          "cache_control": CACHE}]
SYSTEM = [{"type": "text", "text": "You are a careful agent.", "cache_control": CACHE},
          {"type": "text", "text": "Be brief."}]


async def test_thinking_tools_cache_and_images_reach_an_anthropic_upstream_as_sent() -> None:
    async with FakeAnthropic(Reply(text="I see a login form.", reasoning="Looking.")) as fake, \
            gateway_to(fake, "anthropic") as client:
        message = await client.messages.create(
            model="claude", max_tokens=4096, system=SYSTEM, tools=TOOLS, messages=tool_turns(),
            thinking={"type": "enabled", "budget_tokens": 2048}, output_config={"effort": "high"})
        sent = fake.last_request.body
    assert sent["system"] == SYSTEM
    assert sent["tools"] == TOOLS
    assert sent["messages"] == tool_turns()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["output_config"] == {"effort": "high"}
    thinking = message.content[0]
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert (thinking.thinking, thinking.signature) == ("Looking.", "sig-fake")
    assert message.content[1].type == "text"


async def test_a_streamed_answer_carries_the_signature_of_its_thinking() -> None:
    async with FakeAnthropic(Reply(text="Done.", reasoning="Plan first.")) as fake, \
            gateway_to(fake, "anthropic") as client:
        async with client.messages.stream(model="claude", max_tokens=4096, messages=[{"role": "user", "content": "x"}],
                                          thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert "signature" in kinds
    thinking = final.content[0]
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert (thinking.thinking, thinking.signature) == ("Plan first.", "sig-fake")


async def test_is_error_on_a_tool_result_is_forwarded() -> None:
    async with FakeAnthropic(Reply(text="ok")) as fake, gateway_to(fake, "anthropic") as client:
        await client.messages.create(model="claude", max_tokens=100, messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom",
                                          "is_error": True}]}])
        sent = fake.last_request.body
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom",
                                               "is_error": True}]


async def test_to_an_openai_upstream_effort_is_translated_and_tool_images_refused_by_name() -> None:
    async with FakeOpenAI(Reply(text="fine")) as fake, gateway_to(fake, "openai") as client:
        await client.messages.create(model="claude", max_tokens=100, messages=[{"role": "user", "content": "x"}],
                                     thinking={"type": "enabled", "budget_tokens": 8000})
        sent = fake.last_request.body
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(model="claude", max_tokens=100, tools=TOOLS, messages=tool_turns())
    assert sent["reasoning_effort"] == "medium"
    assert "image in a tool result" in str(refused.value)


async def test_an_unknown_top_level_field_is_refused_by_name() -> None:
    async with FakeAnthropic(Reply(text="ok")) as fake, gateway_to(fake, "anthropic") as client:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(model="claude", max_tokens=100, messages=[{"role": "user", "content": "x"}],
                                         extra_body={"inference_geo": "eu"})
    assert "inference_geo" in str(refused.value)


async def test_messages_parse_gets_constrained_output_through_an_anthropic_upstream() -> None:
    from pydantic import BaseModel

    from corral.testing.fakes import ReplyToolCall

    class City(BaseModel):
        name: str
        population: int

    answer = ReplyToolCall("structured_output", {"name": "Paris", "population": 2100000})
    async with FakeAnthropic(Reply(tool_calls=[answer])) as fake, gateway_to(fake, "anthropic") as client:
        parsed = await client.messages.parse(model="claude", max_tokens=200, output_format=City,
                                             messages=[{"role": "user", "content": "Biggest French city?"}])
        sent = fake.last_request.body
    assert parsed.parsed_output == City(name="Paris", population=2100000)
    schema_tool = next(t for t in sent["tools"] if t["name"] == "structured_output")
    assert schema_tool["input_schema"]["properties"]["population"]["type"] == "integer"
    assert sent["tool_choice"] == {"type": "tool", "name": "structured_output"}
