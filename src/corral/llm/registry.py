"""Builds a `Provider` from a configured provider entry, dispatching on its preset's wire."""

from __future__ import annotations

import os
from collections.abc import Mapping

from corral.config.presets import PRESETS, Preset
from corral.config.schema import ProviderConfig
from corral.llm.provider import Provider
from corral.llm.providers._wire import Network, ProxyConfigError


class ProviderBuildError(ValueError):
    """The provider entry cannot be turned into a client (e.g. no base URL)."""


def resolve_base_url(name: str, config: ProviderConfig, preset: Preset) -> str:
    # `<PREFIX>_BASE_URL` from the environment is folded into `config.base_url` by the loader.
    base_url = config.base_url or preset.base_url
    if not base_url:
        raise ProviderBuildError(
            f"provider {name!r} (type {preset.name}) has no default endpoint: set base_url "
            f"(or {preset.env_prefix}_BASE_URL)"
        )
    return base_url


def resolve_api_key(
    config: ProviderConfig, preset: Preset, env: Mapping[str, str], *, name: str | None = None
) -> str | None:
    """The configured key, else the preset's key variable, but only toward the preset's own
    host or a provider named after the preset: a vendor key never leaks to a URL the
    config chose for some other provider (the config loader follows the same rule)."""
    if config.api_key is not None and config.api_key.get_secret_value():
        return config.api_key.get_secret_value()
    trusted = config.base_url in (None, preset.base_url) or name == preset.name
    if preset.key_env and trusted:
        return env.get(preset.key_env) or None
    return None


def build_provider(name: str, config: ProviderConfig, *, env: Mapping[str, str] | None = None) -> Provider:
    """The provider for one configured entry. ``env`` (default: the process environment)
    supplies the preset's key variable, the proxy variables and the TLS trust
    (`Network.from_env`)."""
    preset = PRESETS[config.type]
    if preset.wire == "scripted":
        from corral.llm.providers.scripted import ScriptedProvider

        return ScriptedProvider(name, config)
    environ = os.environ if env is None else env
    base_url = resolve_base_url(name, config, preset)
    api_key = resolve_api_key(config, preset, environ, name=name)
    try:
        network = Network.from_env(environ)
    except ProxyConfigError as exc:
        raise ProviderBuildError(f"provider {name!r}: {exc}") from None
    if preset.wire == "openai":
        from corral.llm.providers.openai import OpenAIProvider

        return OpenAIProvider(
            name, config, base_url=base_url, api_key=api_key, azure=preset.name == "azure", network=network
        )
    if preset.wire == "anthropic":
        from corral.llm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, config, base_url=base_url, api_key=api_key, network=network)
    if preset.wire == "gemini":
        from corral.llm.providers.gemini import GeminiProvider

        return GeminiProvider(name, config, base_url=base_url, api_key=api_key, network=network)
    raise ProviderBuildError(f"provider {name!r}: unknown wire {preset.wire!r}")
