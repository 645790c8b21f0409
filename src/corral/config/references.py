"""Cross-reference checks (a model names a configured provider, an agent names a model...)
and what happens to models whose providers are switched off.

The checks run on the raw parsed data, so they report alongside schema errors even
when other parts of the file are malformed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from corral.config.environment import parse_flag
from corral.config.errors import ConfigError, ConfigIssue, KeyPath, did_you_mean
from corral.config.presets import PRESETS
from corral.config.schema import CorralConfig

LineOf = Callable[[KeyPath], int | None]


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _flag(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    parsed = parse_flag(value) if isinstance(value, str) else None
    return default if parsed is None else parsed


class _Checker:
    def __init__(self, data: Mapping[str, Any], file: str | None, line_of: LineOf) -> None:
        self.file, self.line_of = file, line_of
        self.providers = _mapping(data.get("providers"))
        self.models = _mapping(data.get("models"))
        self.agents = _mapping(data.get("agents"))
        self.passthrough = {
            name for name, p in self.providers.items() if isinstance(p, dict) and _flag(p.get("passthrough"), False)
        }
        self.issues: list[ConfigIssue] = []

    def add(self, path: KeyPath, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, self.line_of(path), path, message))

    def provider(self, name: Any, path: KeyPath) -> None:
        if not isinstance(name, str) or name in self.providers:
            return
        if self.providers:
            self.add(path, f"unknown provider {name!r}{did_you_mean(name, self.providers)}")
        else:
            self.add(path, f"unknown provider {name!r}: no providers are configured")

    def model(self, name: Any, path: KeyPath, *, agents_too: bool) -> None:
        if not isinstance(name, str) or name in self.models or (agents_too and name in self.agents):
            return
        provider, _, upstream = name.partition("/")
        if upstream and provider in self.passthrough:
            return
        choices = [*self.models, *(self.agents if agents_too else [])]
        what = "model or agent" if agents_too else "model"
        self.add(path, f"unknown {what} {name!r}{did_you_mean(name, choices)}")

    def agent(self, name: Any, path: KeyPath) -> None:
        if isinstance(name, str) and name not in self.agents:
            self.add(path, f"unknown agent {name!r}{did_you_mean(name, self.agents)}")

    def names(self, value: Any, path: KeyPath, check: Callable[[Any, KeyPath], None], own: str) -> None:
        for index, item in enumerate(value if isinstance(value, list) else []):
            if item == own:
                self.add((*path, index), f"{own!r} cannot refer to itself")
            else:
                check(item, (*path, index))


def check_references(data: Mapping[str, Any], file: str | None, line_of: LineOf) -> list[ConfigIssue]:
    c = _Checker(data, file, line_of)
    for name, provider in c.providers.items():
        if not isinstance(provider, dict) or not _flag(provider.get("enabled"), True):
            continue
        preset = PRESETS.get(provider.get("type", "openai"))
        if preset is not None and preset.base_url is None and preset.wire != "scripted" \
                and not provider.get("base_url"):
            c.add(("providers", name), f"base_url is required for type {preset.name!r}")
    for alias, model in c.models.items():
        if not isinstance(model, dict):
            continue
        c.provider(model.get("provider"), ("models", alias, "provider"))
        deployments = model.get("deployments")
        for index, deployment in enumerate(deployments if isinstance(deployments, list) else []):
            if isinstance(deployment, dict):
                c.provider(deployment.get("provider"), ("models", alias, "deployments", index, "provider"))
        for key in ("fallbacks", "context_fallbacks"):
            c.names(model.get(key), ("models", alias, key), lambda n, p: c.model(n, p, agents_too=False), alias)
    for name, agent in c.agents.items():
        if not isinstance(agent, dict):
            continue
        if agent.get("model") == name:
            c.add(("agents", name, "model"), f"agent {name!r} cannot use itself as its model")
        else:
            c.model(agent.get("model"), ("agents", name, "model"), agents_too=True)
        for key in ("sub_agents", "agent_tools"):
            c.names(agent.get(key), ("agents", name, key), c.agent, name)
    if data.get("default_model") is not None:
        c.model(data.get("default_model"), ("default_model",), agents_too=True)
    _check_knowledge(c, _mapping(data.get("knowledge")), _mapping(data.get("tools")))
    # services.*.depends_on is checked by the services section itself (corral.config.services).
    return c.issues


def _check_knowledge(c: _Checker, bases: dict[Any, Any], tools: dict[Any, Any]) -> None:
    for name, base in bases.items():
        if not isinstance(base, dict):
            continue
        embedder = base.get("embedder")
        if isinstance(embedder, dict) and embedder.get("type", "model") == "model":
            c.model(embedder.get("model"), ("knowledge", name, "embedder", "model"), agents_too=False)
        search = base.get("search")
        if isinstance(search, dict) and search.get("rerank") is not None:
            c.model(search.get("rerank"), ("knowledge", name, "search", "rerank"), agents_too=False)
    for name, tool in tools.items():
        if isinstance(tool, dict) and tool.get("type") == "knowledge":
            target = tool.get("base")
            if isinstance(target, str) and target not in bases:
                c.add(("tools", name, "base"), f"unknown knowledge base {target!r}{did_you_mean(target, bases)}")


# ---- after validation ---------------------------------------------------------


def drop_disabled(config: CorralConfig, notes: list[str]) -> CorralConfig:
    """Drop models (and deployments) served only by disabled providers, noting each."""
    disabled = {name for name, p in config.providers.items() if not p.enabled}
    if not disabled:
        return config
    models = {}
    for alias, model in config.models.items():
        deployments = model.all_deployments()
        live = [d for d in deployments if d.provider not in disabled]
        if not live:
            off = sorted({d.provider for d in deployments})
            notes.append(f"model {alias!r} dropped: provider {', '.join(off)} is disabled")
            continue
        if len(live) < len(deployments):
            notes.append(f"model {alias!r}: {len(deployments) - len(live)} deployment(s) on disabled providers dropped")
            model = model.model_copy(update={"deployments": live})
        models[alias] = model
    dropped = set(config.models) - set(models)
    for alias, model in models.items():
        kept = {key: [m for m in getattr(model, key) if m not in dropped] for key in ("fallbacks", "context_fallbacks")}
        if kept != {key: getattr(model, key) for key in kept}:
            models[alias] = model.model_copy(update=kept)
    for name, agent in config.agents.items():
        if agent.model in dropped:
            notes.append(f"agent {name!r} uses model {agent.model!r}, which was dropped: its requests will fail")
    default = config.default_model
    if default in dropped:
        notes.append(f"default_model {default!r} was dropped: no default model")
        default = None
    return config.model_copy(update={"models": models, "default_model": default})


def model_exists(config: CorralConfig, name: str) -> bool:
    if name in config.models or name in config.agents:
        return True
    provider, _, upstream = name.partition("/")
    configured = config.providers.get(provider)
    return bool(upstream) and configured is not None and configured.passthrough and configured.enabled


def resolve_model_choice(config: CorralConfig, model: str) -> CorralConfig:
    """Make ``model`` (``--model``) the default model, or raise `ConfigError` if unknown."""
    if model_exists(config, model):
        return config.model_copy(update={"default_model": model})
    suffix = [alias for alias in config.models if alias.endswith(f"/{model}")]
    if len(suffix) == 1:
        return config.model_copy(update={"default_model": suffix[0]})
    known = [*config.models, *config.agents]
    hint = did_you_mean(model, known) or (f"; known: {', '.join(known)}" if known else "")
    raise ConfigError([ConfigIssue("--model", None, (), f"unknown model {model!r}{hint}")])
