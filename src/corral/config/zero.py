"""Zero-config mode: no config file, so the environment decides what to serve.

- every preset whose key variable is set (and not ``<PREFIX>_ENABLED=false``) becomes a
  provider; ``<PREFIX>_BASE_URL`` points it elsewhere
- keyless presets (vllm, llamacpp, openai-compatible) join when ``<PREFIX>_BASE_URL`` is set
- Ollama joins when it answers on ``OLLAMA_BASE_URL`` (default ``http://127.0.0.1:11434/v1``)
- with none of these, the offline ``scripted`` provider echoes under the model ``scripted``

Each provider's default model is exposed as ``<provider>/<model>``, and every provider
is ``passthrough``: any ``<provider>/<anything>`` is sent upstream as ``<anything>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from corral.config.environment import apply_overrides, enabled_override, key_env
from corral.config.errors import ConfigError, ConfigIssue, did_you_mean
from corral.config.loaded import LoadedConfig
from corral.config.presets import PRESETS, ZERO_CONFIG_ORDER, Preset
from corral.config.schema import CorralConfig

OLLAMA_PROBE_TIMEOUT = 0.5  # seconds; a local server answers in a few ms or is not there
SCRIPTED = "scripted"


def probe_ollama_models(base_url: str, timeout: float = OLLAMA_PROBE_TIMEOUT) -> list[str] | None:
    """The model names an Ollama server lists, or None when nothing answers there."""
    import httpx  # only zero-config probes; loading a config file should not pay for httpx

    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        response = httpx.get(f"{root}/api/tags", timeout=timeout)
        response.raise_for_status()
        listed = response.json().get("models") or []
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return [str(m.get("name") or m.get("model")) for m in listed if isinstance(m, dict)]


class _Builder:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.providers: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.issues: list[ConfigIssue] = []

    def enabled(self, preset: Preset) -> bool:
        flag, issue = enabled_override(preset, self.env)
        if issue:
            self.issues.append(issue)
        if flag is False:
            self.notes.append(f"{preset.env_prefix}_ENABLED=false: {preset.name} skipped")
        return flag is not False and issue is None

    def add(self, preset: Preset, base_url: str | None, api_key: str | None, models: list[str]) -> None:
        provider: dict[str, Any] = {"type": preset.name, "passthrough": True}
        if base_url:
            provider["base_url"] = base_url
        if api_key:
            provider["api_key"] = api_key
        self.providers[preset.name] = provider
        for upstream in models:
            self.models[f"{preset.name}/{upstream}"] = {"provider": preset.name, "model": upstream}

    def keyed(self) -> None:
        for preset in PRESETS.values():
            key = self.env.get(preset.key_env) if preset.key_env else None
            if not key or not self.enabled(preset):
                continue
            base_url = self.env.get(f"{preset.env_prefix}_BASE_URL") or None
            if preset.base_url is None and base_url is None:
                self.notes.append(f"{preset.key_env} is set but {preset.env_prefix}_BASE_URL is not: "
                                  f"{preset.name} skipped")
                continue
            self.add(preset, base_url, key, [preset.default_model] if preset.default_model else [])

    def keyless(self) -> None:
        for preset in PRESETS.values():
            if preset.key_env or preset.name in ("ollama", SCRIPTED):
                continue
            base_url = self.env.get(f"{preset.env_prefix}_BASE_URL")
            if base_url and self.enabled(preset):
                self.add(preset, base_url, self.env.get(key_env(preset)), [])

    def ollama(self, probe: bool) -> None:
        preset = PRESETS["ollama"]
        explicit = self.env.get("OLLAMA_BASE_URL")
        if not (probe or explicit) or not self.enabled(preset):
            return
        base_url = explicit or preset.base_url or ""
        models = probe_ollama_models(base_url) if probe else None
        if models is None and not explicit:
            return
        if models is None:
            self.notes.append(f"Ollama did not answer at {base_url}: serving it without a model list")
        self.add(preset, explicit, None, models or [])

    def scripted(self) -> None:
        self.providers[SCRIPTED] = {"type": SCRIPTED, "echo": True}
        self.models[SCRIPTED] = {"provider": SCRIPTED, "model": "echo",
                                 "description": "offline scripted model: echoes the last user message"}

    def default_model(self) -> str | None:
        for name in ZERO_CONFIG_ORDER:
            preset = PRESETS[name]
            alias = f"{name}/{preset.default_model}"
            if alias in self.models:
                return alias
        return next(iter(self.models), None)

    def choose(self, model: str) -> str:
        if model in self.models:
            return model
        provider, _, upstream = model.partition("/")
        if upstream and provider in self.providers:
            self.models[model] = {"provider": provider, "model": upstream}
            return model
        suffix = [alias for alias in self.models if alias.endswith(f"/{model}")]
        if len(suffix) == 1:
            return suffix[0]
        preset = PRESETS.get(provider) if upstream else None
        if preset is not None and preset.key_env:
            hint = f": provider {provider!r} is not configured (set {preset.key_env})"
        elif preset is not None and preset.name == "ollama":
            hint = ": Ollama is not answering (start it or set OLLAMA_BASE_URL)"
        else:
            hint = did_you_mean(model, self.models) or f"; available: {', '.join(self.models)}"
        raise ConfigError([ConfigIssue("--model", None, (), f"unknown model {model!r}{hint}")])


def zero_config(env: Mapping[str, str], *, probe_ollama: bool = True, model: str | None = None) -> LoadedConfig:
    builder = _Builder(env)
    builder.keyed()
    builder.keyless()
    builder.ollama(probe_ollama)
    if builder.issues:
        raise ConfigError(builder.issues)
    if not builder.providers:
        builder.notes.append("no provider key found: serving the offline scripted model 'scripted' "
                             "(set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY... or start Ollama)")
        builder.scripted()
    elif model is not None and model.partition("/")[0] == SCRIPTED:
        builder.scripted()
    default = builder.choose(model) if model is not None else builder.default_model()
    if default is None:
        builder.notes.append("no default model: requests must name '<provider>/<model>'")
    raw: dict[str, Any] = {"providers": builder.providers, "models": builder.models, "default_model": default}
    notes, issues = apply_overrides(raw, env)
    if issues:
        raise ConfigError(issues)
    try:
        config = CorralConfig.model_validate(raw)
    except ValidationError as exc:  # only reachable through a bad environment value
        raise ConfigError([ConfigIssue("environment", None, tuple(str(p) for p in e["loc"]), e["msg"])
                           for e in exc.errors(include_url=False)]) from None
    summary = ", ".join(builder.providers)
    return LoadedConfig(config=config, path=None, zero_config=True,
                        notes=[f"zero-config: providers {summary}", *builder.notes, *notes], env=dict(env))
