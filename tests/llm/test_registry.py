"""`build_provider` dispatches on the preset's wire and resolves URL and key."""

from __future__ import annotations

import pytest

from corral.config.presets import PRESETS
from corral.config.schema import ProviderConfig
from corral.llm.provider import Provider
from corral.llm.providers.anthropic import AnthropicProvider
from corral.llm.providers.gemini import GeminiProvider
from corral.llm.providers.openai import OpenAIProvider
from corral.llm.registry import ProviderBuildError, build_provider, resolve_api_key, resolve_base_url
from corral.llm.types import ChatRequest, Message
from corral.testing.fakes import FakeOpenAI

EXPECTED_CLASS = {"openai": OpenAIProvider, "anthropic": AnthropicProvider, "gemini": GeminiProvider}


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.values() if p.wire != "scripted"))
async def test_every_http_preset_builds_the_adapter_for_its_wire(preset: str) -> None:
    config = ProviderConfig(type=preset, base_url=None if PRESETS[preset].base_url else "http://127.0.0.1:9/v1")
    provider = build_provider(preset, config, env={})
    try:
        assert isinstance(provider, EXPECTED_CLASS[PRESETS[preset].wire])
        assert isinstance(provider, Provider)
        assert provider.name == preset
    finally:
        await provider.aclose()


async def test_scripted_type_builds_the_scripted_provider() -> None:
    from corral.testing.scripted import ScriptedProvider

    provider = build_provider("offline", ProviderConfig(type="scripted"))
    assert isinstance(provider, ScriptedProvider)
    assert provider.name == "offline"


def test_base_url_prefers_config_then_preset_default() -> None:
    preset = PRESETS["groq"]
    assert resolve_base_url("g", ProviderConfig(type="groq"), preset) == "https://api.groq.com/openai/v1"
    configured = ProviderConfig(type="groq", base_url="http://proxy.local/v1")
    assert resolve_base_url("g", configured, preset) == "http://proxy.local/v1"


@pytest.mark.parametrize("preset", ["openai-compatible", "azure"])
def test_preset_without_a_default_url_needs_one(preset: str) -> None:
    with pytest.raises(ProviderBuildError, match="base_url") as caught:
        build_provider("mine", ProviderConfig(type=preset), env={})
    assert "mine" in str(caught.value)


def test_api_key_prefers_config_then_the_preset_env_var() -> None:
    preset = PRESETS["mistral"]
    env = {"MISTRAL_API_KEY": "from-env"}
    assert resolve_api_key(ProviderConfig(type="mistral"), preset, env) == "from-env"
    assert resolve_api_key(ProviderConfig(type="mistral", api_key="from-config"), preset, env) == "from-config"
    assert resolve_api_key(ProviderConfig(type="mistral"), preset, {}) is None
    assert resolve_api_key(ProviderConfig(type="vllm"), PRESETS["vllm"], env) is None


def test_vendor_key_is_not_sent_to_a_host_chosen_for_another_provider() -> None:
    env = {"OPENAI_API_KEY": "sk-real"}
    elsewhere = ProviderConfig(type="openai", base_url="http://some-proxy.local/v1")
    assert resolve_api_key(elsewhere, PRESETS["openai"], env, name="proxy") is None
    assert resolve_api_key(elsewhere, PRESETS["openai"], env, name="openai") == "sk-real"
    official = ProviderConfig(type="openai", base_url="https://api.openai.com/v1")
    assert resolve_api_key(official, PRESETS["openai"], env, name="proxy") == "sk-real"


async def test_key_from_env_reaches_the_upstream() -> None:
    async with FakeOpenAI(api_key="env-key") as fake:
        config = ProviderConfig(type="deepseek", base_url=fake.base_url)
        provider = build_provider("deepseek", config, env={"DEEPSEEK_API_KEY": "env-key"})
        result = await provider.complete(ChatRequest(model="deepseek-chat", messages=[Message.text("user", "hi")]))
        await provider.aclose()
    assert result.message.text_content == "You said: hi"
    assert fake.last_request.headers["authorization"] == "Bearer env-key"


def test_retry_after_accepts_seconds_milliseconds_and_http_dates() -> None:
    from httpx import Headers

    from corral.llm.providers._http import retry_after_seconds

    assert retry_after_seconds(Headers({"retry-after": "2.5"})) == 2.5
    assert retry_after_seconds(Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    date = Headers({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert retry_after_seconds(date, now=1445412500.0) == 10.0
    assert retry_after_seconds(Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(Headers({})) is None
