"""A deployment that answers 429 with a retry-after longer than `router.max_retry_after`
rests that long, and its healthy sibling serves the calls."""

from __future__ import annotations

from pathlib import Path

import openai

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.testing.fakes import FakeOpenAI, Reply
from corral.testing.server import serve_app

KEY = "sk-upstream-test"


async def test_a_long_retry_after_on_one_deployment_sends_every_call_to_its_healthy_sibling(tmp_path: Path) -> None:
    async with (FakeOpenAI(default=Reply.error(429, "slow down", retry_after=120), api_key=KEY) as limited,
                FakeOpenAI(api_key=KEY) as healthy):
        provider = {"type": "openai", "api_key": KEY}
        config = CorralConfig.model_validate({
            "providers": {"limited": {**provider, "base_url": limited.base_url},
                          "healthy": {**provider, "base_url": healthy.base_url}},
            "models": {"chat": {"deployments": [{"provider": "limited", "model": "gpt-4o-mini"},
                                                {"provider": "healthy", "model": "gpt-4o-mini"}],
                                "num_retries": 2}},
            "router": {"max_retry_after": 30, "allowed_fails": 5},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"},
            "verification": {"enabled": False},
        })
        async with serve_app(create_app(config)) as base_url:
            sdk = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
            try:
                for i in range(40):
                    answer = await sdk.chat.completions.create(
                        model="chat", messages=[{"role": "user", "content": f"call {i}"}])
                    assert answer.choices[0].message.content == f"You said: call {i}"
            finally:
                await sdk.close()
        # Asked once: it then rests for its retry-after (120 s), far past this test.
        assert len(limited.requests) == 1
        assert len(healthy.requests) == 40
