"""Reasoning effort on the OpenAI surfaces reaches the upstream (as ``reasoning_effort``
on OpenAI, as ``output_config.effort`` on Anthropic); Responses fields this gateway
cannot honour are refused by name, never accepted and dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.testing.fakes import FakeAnthropic, FakeOpenAI, Reply
from corral.testing.server import serve_app


@asynccontextmanager
async def gateway_to(fake: FakeAnthropic | FakeOpenAI, wire: str) -> AsyncIterator[openai.AsyncOpenAI]:
    config = CorralConfig.model_validate({
        "providers": {"up": {"type": wire, "base_url": fake.base_url, "api_key": "sk-up"}},
        "models": {"m": {"provider": "up", "model": "upstream-model", "num_retries": 0}},
        "verification": {"enabled": False},
    })
    async with serve_app(create_app(config)) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            yield client


async def test_reasoning_effort_reaches_openai_and_anthropic_upstreams() -> None:
    async with FakeOpenAI(Reply(text="a"), Reply(text="b")) as up, gateway_to(up, "openai") as client:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                             reasoning_effort="low")
        chat = up.last_request.body
        await client.responses.create(model="m", input="x", reasoning={"effort": "high", "summary": "auto"})
        responses = up.last_request.body
    async with FakeAnthropic(Reply(text="c")) as up, gateway_to(up, "anthropic") as client:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                             reasoning_effort="medium")
        anthropic_body = up.last_request.body
    assert chat["reasoning_effort"] == "low"
    assert responses["reasoning_effort"] == "high"
    assert anthropic_body["output_config"] == {"effort": "medium"}


@pytest.mark.parametrize(("field", "value"), [("store", True), ("background", True), ("truncation", "auto"),
                                              ("prompt_cache_key", "k"), ("include", ["reasoning.encrypted_content"])])
async def test_responses_fields_it_cannot_honour_are_refused_by_name(field: str, value: object) -> None:
    async with FakeOpenAI(Reply(text="a")) as up, gateway_to(up, "openai") as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="m", input="x", extra_body={field: value})
        assert up.requests == []
    assert refused.value.body["param"] == field  # type: ignore[index]
    assert field in refused.value.body["message"]  # type: ignore[index]


async def test_responses_with_store_false_and_truncation_disabled_are_served() -> None:
    async with FakeOpenAI(Reply(text="fine")) as up, gateway_to(up, "openai") as client:
        reply = await client.responses.create(model="m", input="x", store=False, truncation="disabled",
                                              reasoning={"effort": "minimal"})
    assert reply.output_text == "fine"
    assert reply.reasoning is not None and reply.reasoning.effort == "minimal"
