"""Fixtures for the provider adapters: a fake upstream per wire API and a provider
built by the registry pointing at it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from corral.config.schema import ProviderConfig
from corral.llm.provider import Provider
from corral.llm.registry import build_provider
from corral.testing.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeUpstream

API_KEY = "sk-test-0123456789abcdef"

FAKES: dict[str, type[FakeUpstream]] = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "gemini": FakeGemini}


def make_provider(wire: str, base_url: str, **config: Any) -> Provider:
    settings: dict[str, Any] = {"type": wire, "base_url": base_url, "api_key": API_KEY, **config}
    return build_provider(wire, ProviderConfig(**settings), env={})


MakeProvider = Callable[..., Provider]


@pytest.fixture
def make() -> MakeProvider:
    """``make(wire, base_url, **config)``: a provider built by the registry with the test key."""
    return make_provider


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="module")
def fake_class(wire: str) -> type[FakeUpstream]:
    return FAKES[wire]


@pytest.fixture(scope="module", params=sorted(FAKES))
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def _fake_server(wire: str) -> Iterator[FakeUpstream]:
    # One server per module and wire (starting one costs ~0.2 s); `fake` resets it per test.
    with FAKES[wire](api_key=API_KEY) as server:
        yield server


@pytest.fixture
def fake(_fake_server: FakeUpstream) -> FakeUpstream:
    _fake_server.reset()
    return _fake_server


@pytest.fixture
async def provider(wire: str, fake: FakeUpstream) -> AsyncIterator[Provider]:
    built = make_provider(wire, fake.base_url, timeout=10)
    yield built
    await built.aclose()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, read back, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
