"""Agents as models on `/v1/chat/completions` (and `/v1/messages`), through the official SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


def agent_config(**agents: dict[str, Any]) -> CorralConfig:
    return CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted", "context_window": 128000}},
        "agents": agents,
    })


@asynccontextmanager
async def agent_server(steps: list[ScriptStep], **agents: dict[str, Any]) -> AsyncIterator[tuple[str, ScriptedProvider]]:
    provider = ScriptedProvider.from_steps("script", steps)
    app = create_app(agent_config(**agents), providers={"script": provider})
    async with serve_app(app) as base_url:
        yield base_url, provider


@asynccontextmanager
async def sdk(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


TIME_THEN_ANSWER = [
    ScriptStep(tool_calls=[{"name": "current_time", "arguments": {"timezone": "UTC"}}]),
    ScriptStep(text="It is late."),
]


async def test_agent_answers_as_a_model_after_calling_its_time_tool() -> None:
    async with agent_server(TIME_THEN_ANSWER, assistant={"model": "scripted", "instructions": "Be brief.",
                                                          "tools": ["time"]}) as (url, provider), sdk(url) as client:
        completion = await client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "what time is it?"}])
    assert completion.choices[0].message.content == "It is late."
    assert completion.model == "assistant"
    first, second = provider.requests
    assert first.messages[0].role == "system" and first.messages[0].text_content == "Be brief."
    assert [t.name for t in first.tools] == ["current_time"]
    tool_message = second.messages[-1]
    assert tool_message.role == "tool" and '"timezone": "UTC"' in tool_message.text_content


async def test_agent_streams_its_final_text_and_is_listed_as_a_model() -> None:
    async with agent_server(TIME_THEN_ANSWER, assistant={"model": "scripted", "tools": ["time"]}) as (url, _):
        async with sdk(url) as client:
            stream = await client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "time?"}], stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            models = [m.id async for m in client.models.list()]
    assert text == "It is late."
    assert "assistant" in models and "scripted" in models


async def test_session_header_continues_the_conversation_from_the_store() -> None:
    steps = [ScriptStep(text="Nice to meet you, Ada."), ScriptStep(text="Your name is Ada.")]
    async with agent_server(steps, assistant={"model": "scripted"}) as (url, provider):
        async with sdk(url) as client:
            headers = {"x-corral-session-id": "sess-1"}
            await client.chat.completions.create(model="assistant", extra_headers=headers,
                                                 messages=[{"role": "user", "content": "I am Ada"}])
            answer = await client.chat.completions.create(model="assistant", extra_headers=headers,
                                                          messages=[{"role": "user", "content": "Who am I?"}])
        async with httpx.AsyncClient(base_url=url) as http:
            session = (await http.get("/v1/sessions/sess-1")).json()
    assert answer.choices[0].message.content == "Your name is Ada."
    seen = [(m.role, m.text_content) for m in provider.requests[1].messages]
    assert seen == [("user", "I am Ada"), ("assistant", "Nice to meet you, Ada."), ("user", "Who am I?")]
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "I am Ada"), ("assistant", "Nice to meet you, Ada."),
        ("user", "Who am I?"), ("assistant", "Your name is Ada.")]
    assert session["agent"] == "assistant"


async def test_failed_agent_run_is_an_openai_error() -> None:
    async with agent_server([ScriptStep(error="bad_request")], assistant={"model": "scripted"}) as (url, _):
        async with sdk(url) as client:
            try:
                await client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
            except openai.APIStatusError as exc:
                error = exc
    assert error.status_code == 500
    assert "failed" in error.message and "model error (400)" in error.message


async def test_agent_answers_the_anthropic_sdk_too() -> None:
    import anthropic

    async with agent_server(TIME_THEN_ANSWER, assistant={"model": "scripted", "tools": ["time"]}) as (url, _):
        client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
        try:
            message = await client.messages.create(model="assistant", max_tokens=100,
                                                   messages=[{"role": "user", "content": "time?"}])
        finally:
            await client.close()
    assert message.content[0].type == "text" and message.content[0].text == "It is late."
    assert message.stop_reason == "end_turn"
