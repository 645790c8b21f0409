from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import openai
import pytest

from corral.config.schema import CorralConfig, ModelConfig, ProviderConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

ServerFactory = Callable[..., AbstractAsyncContextManager[str]]


def scripted_config(**overrides: object) -> CorralConfig:
    base: dict[str, object] = {
        "providers": {"script": ProviderConfig(type="scripted")},
        "models": {"scripted": ModelConfig(provider="script", model="scripted", context_window=128000, num_retries=0)},
    }
    base.update(overrides)
    return CorralConfig.model_validate(base)


@pytest.fixture
def scripted_server() -> ServerFactory:
    """`async with scripted_server(steps) as (base_url, provider)`: a real loopback
    gateway whose only upstream is a scripted model."""

    @asynccontextmanager
    async def start(steps: list[ScriptStep] | None = None, **config: object) -> AsyncIterator[tuple[str, ScriptedProvider]]:
        provider = ScriptedProvider.from_steps("script", steps or [])
        app = create_app(scripted_config(**config), providers={"script": provider})
        async with serve_app(app) as base_url:
            yield base_url, provider

    return start  # type: ignore[return-value]


@pytest.fixture
async def client() -> AsyncIterator[Callable[[str], openai.AsyncOpenAI]]:
    """`client(base_url)`: an official `openai` SDK client (no retries), closed at the
    end of the test."""
    made: list[openai.AsyncOpenAI] = []

    def make(base_url: str) -> openai.AsyncOpenAI:
        made.append(openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0))
        return made[-1]

    yield make
    for sdk in made:
        await sdk.close()
