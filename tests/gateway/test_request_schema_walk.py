"""Every field of the three surfaces' published request schemas (as the official SDKs
declare them) is forwarded to the upstream, translated into something it takes, or
refused with a 400 that names it: none is accepted and dropped.

Each field is sent alone on a minimal request, through Corral, to a recording fake
upstream of the same vendor; the test then looks for it in what the upstream received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from anthropic.types import message_create_params
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.testing.fakes import FakeAnthropic, FakeOpenAI, FakeUpstream, Reply
from corral.testing.server import serve_app

TOOL_OPENAI = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
TOOL_RESPONSES = {"type": "function", "name": "f", "parameters": {"type": "object"}}
TOOL_ANTHROPIC = {"name": "f", "input_schema": {"type": "object"}}

CHAT_BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CHAT_SAMPLES: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"}, "frequency_penalty": 0.5, "function_call": "auto",
    "functions": [{"name": "f", "parameters": {"type": "object"}}], "logit_bias": {"50256": -100},
    "logprobs": True, "max_completion_tokens": 50, "max_tokens": 50, "metadata": {"k": "v"},
    "modalities": ["text"], "moderation": {"input": "auto"}, "n": 2, "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "x"}, "presence_penalty": 0.5, "prompt_cache_key": "k",
    "prompt_cache_options": {"ttl": "1h"}, "prompt_cache_retention": "24h", "reasoning_effort": "low",
    "response_format": {"type": "json_object"}, "safety_identifier": "s", "seed": 1, "service_tier": "auto",
    "stop": ["x"], "store": False, "stream_options": {"include_usage": True}, "temperature": 0.5,
    "tool_choice": "none", "tools": [TOOL_OPENAI], "top_logprobs": 2, "top_p": 0.5, "user": "u",
    "verbosity": "low", "web_search_options": {},
}
# Fields the gateway turns into others (the upstream key that carries them).
CHAT_TRANSLATED = {"model": "model", "messages": "messages", "max_completion_tokens": "max_completion_tokens",
                   "max_tokens": "max_completion_tokens", "stream_options": "stream_options"}

RESPONSES_BASE = {"model": "m", "input": "hi"}
RESPONSES_SAMPLES: dict[str, Any] = {
    "access_programs": ["x"], "background": True, "background_options": {}, "context_management": [{}],
    "conversation": "conv_1", "image": {}, "include": ["reasoning.encrypted_content"], "instructions": "Be brief.",
    "max_output_tokens": 50, "max_tool_calls": 2, "metadata": {"k": "v"}, "moderation": {},
    "parallel_tool_calls": False, "previous_response_id": "resp_1", "prompt": {"id": "p"},
    "prompt_cache_key": "k", "prompt_cache_options": {}, "prompt_cache_retention": "24h",
    "reasoning": {"effort": "low"}, "safety_identifier": "s", "service_tier": "auto", "store": True,
    "stream_options": {}, "temperature": 0.5, "text": {"format": {"type": "json_object"}}, "tool_choice": "none",
    "tools": [TOOL_RESPONSES], "top_logprobs": 2, "top_p": 0.5, "truncation": "auto", "user": "u",
}
RESPONSES_TRANSLATED = {"model": "model", "input": "messages", "instructions": "messages",
                        "max_output_tokens": "max_completion_tokens", "reasoning": "reasoning_effort",
                        "text": "response_format"}
RESPONSES_ECHOED = {"metadata"}  # kept on the returned response object, where the API defines it

MESSAGES_BASE = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES_SAMPLES: dict[str, Any] = {
    "cache_control": {"type": "ephemeral"}, "container": "c1", "diagnostics": {}, "inference_geo": "eu",
    "metadata": {"user_id": "u"}, "output_config": {"effort": "low"}, "service_tier": "auto", "speed": "fast",
    "stop_sequences": ["x"], "system": "Be brief.", "thinking": {"type": "enabled", "budget_tokens": 1024},
    "tool_choice": {"type": "none"}, "tools": [TOOL_ANTHROPIC], "user_profile_id": "p1", "workspace_id": "w1",
    "temperature": 0.5, "top_p": 0.5, "top_k": 5,
}
MESSAGES_TRANSLATED = {"model": "model", "messages": "messages", "max_tokens": "max_tokens"}


def fields(params: type) -> list[str]:
    return sorted(params.__annotations__)


@asynccontextmanager
async def through(fake: FakeUpstream, wire: str) -> AsyncIterator[httpx.AsyncClient]:
    config = CorralConfig.model_validate({
        "providers": {"up": {"type": wire, "base_url": fake.base_url, "api_key": "sk-up"}},
        "models": {"m": {"provider": "up", "model": "gpt-5", "num_retries": 0}},
        "verification": {"enabled": False},
    })
    async with serve_app(create_app(config)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


def with_field(base: dict[str, Any], field: str, value: Any, tool: dict[str, Any]) -> dict[str, Any]:
    body = {**base, field: value}
    if field in ("tool_choice", "parallel_tool_calls"):
        body["tools"] = [tool]
    if field == "stream_options":
        body["stream"] = True
    return body


def outcome(field: str, answer: httpx.Response, sent: dict[str, Any] | None, translated: dict[str, str],
            echoed: frozenset[str] = frozenset()) -> str:
    if answer.status_code == 400:
        assert field in answer.text, f"{field}: refused without naming it: {answer.text}"
        return "refused"
    assert answer.status_code == 200, f"{field}: {answer.status_code} {answer.text}"
    assert sent is not None, f"{field}: answered without calling the upstream"
    if field in sent:
        return "forwarded"
    if field in translated and translated[field] in sent:
        return "translated"
    if field in echoed and field in answer.json():
        return "echoed"
    raise AssertionError(f"{field}: accepted and dropped (the upstream got {sorted(sent)})")


async def walk(fake: FakeUpstream, wire: str, path: str, base: dict[str, Any], names: list[str],
               samples: dict[str, Any], tool: dict[str, Any], translated: dict[str, str],
               echoed: frozenset[str] = frozenset()) -> dict[str, str]:
    results: dict[str, str] = {}
    async with through(fake, wire) as http:
        for name in names:
            fake.reset()
            fake.add(Reply(text="ok"))
            value = base[name] if name in base else samples[name]
            answer = await http.post(path, json=with_field(base, name, value, tool))
            sent = fake.requests[-1].body if fake.requests else None
            results[name] = outcome(name, answer, sent, translated, echoed)
    return results


async def test_every_chat_completions_field_is_forwarded_translated_or_refused() -> None:
    names = fields(completion_create_params.CompletionCreateParamsBase)
    async with FakeOpenAI() as fake:
        results = await walk(fake, "openai", "/v1/chat/completions", CHAT_BASE, names, CHAT_SAMPLES, TOOL_OPENAI,
                             CHAT_TRANSLATED)
    assert set(results) == set(names)
    assert results["reasoning_effort"] == "forwarded" and results["logprobs"] == "forwarded"


async def test_every_responses_field_is_forwarded_translated_or_refused() -> None:
    names = fields(response_create_params.ResponseCreateParamsBase)
    async with FakeOpenAI() as fake:
        results = await walk(fake, "openai", "/v1/responses", RESPONSES_BASE, names, RESPONSES_SAMPLES,
                             TOOL_RESPONSES, RESPONSES_TRANSLATED, frozenset(RESPONSES_ECHOED))
    assert set(results) == set(names)
    assert results["reasoning"] == "translated"
    assert {results[n] for n in ("store", "background", "truncation", "previous_response_id")} == {"refused"}


@pytest.mark.parametrize("extra", [["temperature", "top_p", "top_k"]])
async def test_every_messages_field_is_forwarded_translated_or_refused(extra: list[str]) -> None:
    names = fields(message_create_params.MessageCreateParamsBase) + extra
    async with FakeAnthropic() as fake:
        results = await walk(fake, "anthropic", "/v1/messages", MESSAGES_BASE, names, MESSAGES_SAMPLES,
                             TOOL_ANTHROPIC, MESSAGES_TRANSLATED)
    assert set(results) == set(names)
    assert {results[n] for n in ("thinking", "output_config", "system", "tools", "metadata")} == {"forwarded"}
