from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from corral.config.schema import CorralConfig, ModelConfig, ProviderConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


@pytest.fixture
def scripted_server():
    """`async with scripted_server(steps, **config) as (base_url, app)`: a loopback gateway
    over a scripted model (yields the app, so tests can reach its components)."""

    @asynccontextmanager
    async def start(steps: list[ScriptStep] | None = None, **config: object) -> AsyncIterator[tuple[str, object]]:
        base: dict[str, object] = {
            "providers": {"script": ProviderConfig(type="scripted")},
            "models": {"scripted": ModelConfig(provider="script", model="scripted")},
            **config,
        }
        provider = ScriptedProvider.from_steps("script", steps or [])
        app = create_app(CorralConfig.model_validate(base), providers={"script": provider})
        async with serve_app(app) as base_url:
            yield base_url, app

    return start
