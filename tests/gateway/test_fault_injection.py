"""Fault injection: one deployment of an alias fails in every way the issue names
(500, 503, 429 with retry-after, connection reset, read timeout, garbage body); the
other is healthy; clients of the gateway never see the failure."""

from __future__ import annotations

import openai
import pytest

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.testing.fakes import FakeOpenAI, Reply
from corral.testing.server import serve_app

FAULTS = {
    "500": Reply.error(500, "internal"),
    "503": Reply.error(503, "overloaded"),
    "429-retry-after": Reply.error(429, "slow down", retry_after=0.1),
    "connection-reset": Reply(drop=True),
    "read-timeout": Reply(text="too late", delay=2.0),
    "garbage-body": Reply.garbage(),
}


def config(bad_url: str, good_url: str) -> CorralConfig:
    return CorralConfig.model_validate({
        "providers": {
            "bad": {"type": "openai", "base_url": bad_url, "api_key": "sk-bad", "timeout": 0.5},
            "good": {"type": "openai", "base_url": good_url, "api_key": "sk-good"},
        },
        "models": {"chat": {
            # `bad` is always picked first while healthy; the router must recover on `good`.
            "deployments": [{"provider": "bad", "model": "gpt-4o-mini", "weight": 1e9},
                            {"provider": "good", "model": "gpt-4o-mini", "weight": 1e-9}],
            "num_retries": 2}},
        "router": {"backoff_base": 0.01, "allowed_fails": 1, "cooldown_seconds": 60},
        "verification": {"enabled": False},
    })


CASES = [(f, s) for f in FAULTS for s in (False, True) if not (f == "connection-reset" and s)]


@pytest.mark.parametrize(("fault", "stream"), CASES)
async def test_a_failing_deployment_is_invisible_to_clients(fault: str, stream: bool) -> None:
    async with FakeOpenAI(default=FAULTS[fault]) as bad, FakeOpenAI(default=Reply(text="healthy answer")) as good:
        app = create_app(config(bad.base_url, good.base_url))
        async with serve_app(app) as base_url:
            async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
                texts = []
                for _ in range(3):
                    if stream:
                        chunks = await sdk.chat.completions.create(
                            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)
                        texts.append("".join([c.choices[0].delta.content or "" async for c in chunks if c.choices]))
                    else:
                        reply = await sdk.chat.completions.create(
                            model="chat", messages=[{"role": "user", "content": "hi"}])
                        texts.append(reply.choices[0].message.content)
        bad_calls = len(bad.requests)
    assert texts == ["healthy answer"] * 3
    # The first request hits `bad` once, then it cools down and is skipped.
    assert bad_calls == 1
    states = {s.deployment.provider: s for s in app.state.gateway.router.deployment_states()}
    assert states["bad"].failures == 1 and states["good"].successes == 3


async def test_a_connection_dropped_after_output_started_ends_the_stream_with_an_error() -> None:
    """Once chunks reached the client nothing can be retried invisibly: the stream ends
    with an OpenAI error payload (no [DONE]) and the SDK raises."""
    async with FakeOpenAI(default=Reply(text="partial answer here", drop=True)) as bad, \
            FakeOpenAI(default=Reply(text="healthy answer")) as good:
        app = create_app(config(bad.base_url, good.base_url))
        async with serve_app(app) as base_url:
            async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as sdk:
                received = []
                with pytest.raises(openai.APIError, match="closed the connection"):
                    chunks = await sdk.chat.completions.create(
                        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)
                    async for chunk in chunks:
                        if chunk.choices:
                            received.append(chunk.choices[0].delta.content or "")
                # The next request is served by the healthy deployment.
                reply = await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert "".join(received) and "partial answer here".startswith("".join(received))
    assert reply.choices[0].message.content == "healthy answer"
    states = {s.deployment.provider: s for s in app.state.gateway.router.deployment_states()}
    assert states["bad"].failures >= 1 and states["bad"].cooldown_until > 0  # cooled down
