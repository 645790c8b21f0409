"""`corral generate opencode|crush`: coding-agent configs that point at this server.

The URL comes from the config's own host/port/TLS (or ``--url``), so the client and the
server cannot disagree about the port. Models are the config's model aliases and public
agents, with their context and output limits; the key is read from ``CORRAL_API_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.config.schema import CorralConfig, PriceConfig
from corral.deploy.common import DeployError

PROVIDER_ID = "corral"
API_KEY_ENV = "CORRAL_API_KEY"
DEFAULT_CONTEXT = 128_000
DEFAULT_OUTPUT = 8_192


@dataclass(frozen=True, slots=True)
class ServedModel:
    id: str
    description: str
    context: int
    output: int
    price: PriceConfig | None
    agent: bool


def _price(config: CorralConfig, alias: str) -> PriceConfig | None:
    if alias in config.pricing:
        return config.pricing[alias]
    model = config.models.get(alias)
    for deployment in model.all_deployments() if model else []:
        for key in (f"{deployment.provider}/{deployment.model}", deployment.model):
            if key in config.pricing:
                return config.pricing[key]
    return None


def served_models(
    config: CorralConfig, *, default_context: int = DEFAULT_CONTEXT, default_output: int = DEFAULT_OUTPUT
) -> list[ServedModel]:
    """What a client may name in ``model``: chat model aliases, then public agents."""
    served: dict[str, ServedModel] = {}
    for alias, model in config.models.items():
        if model.embedding:
            continue
        served[alias] = ServedModel(
            id=alias,
            description=model.description or alias,
            context=model.context_window or default_context,
            output=model.max_output_tokens or default_output,
            price=_price(config, alias),
            agent=False,
        )
    for name, agent in config.agents.items():
        if agent.visibility != "public":
            continue
        # An agent without its own model runs on the default model.
        model_name = agent.model or config.default_model
        base = served.get(model_name) if model_name else None
        served[name] = ServedModel(
            id=name,
            description=agent.description or f"agent {name}",
            context=base.context if base else default_context,
            output=base.output if base else default_output,
            price=base.price if base else None,
            agent=True,
        )
    return list(served.values())


def default_model(config: CorralConfig, models: list[ServedModel]) -> str:
    if not models:
        raise DeployError("the config serves no models or public agents; add `models:` or `agents:`")
    ids = [m.id for m in models]
    if config.default_model in ids:
        return str(config.default_model)
    agents = [m.id for m in models if m.agent]
    return agents[0] if agents else ids[0]


def api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def opencode_config(config: CorralConfig, url: str, models: list[ServedModel]) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    for model in models:
        entry: dict[str, Any] = {
            "name": model.description if model.description != model.id else model.id,
            "tool_call": True,
            "temperature": True,
            "limit": {"context": model.context, "output": model.output},
        }
        if model.price:
            entry["cost"] = {"input": model.price.input, "output": model.price.output}
        entries[model.id] = entry
    default = default_model(config, models)
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Corral",
                "options": {"baseURL": api_base(url), "apiKey": f"{{env:{API_KEY_ENV}}}"},
                "models": entries,
            }
        },
        "model": f"{PROVIDER_ID}/{default}",
        "small_model": f"{PROVIDER_ID}/{default}",
    }


def crush_config(config: CorralConfig, url: str, models: list[ServedModel]) -> dict[str, Any]:
    entries = []
    for model in models:
        price = model.price
        cached = price.cached_input if price and price.cached_input is not None else (price.input if price else 0.0)
        entries.append({
            "id": model.id,
            "name": model.description,
            "cost_per_1m_in": price.input if price else 0.0,
            "cost_per_1m_out": price.output if price else 0.0,
            "cost_per_1m_in_cached": cached,
            "cost_per_1m_out_cached": price.output if price else 0.0,
            "context_window": model.context,
            "default_max_tokens": model.output,
            "can_reason": False,
            "supports_attachments": False,
        })
    default = default_model(config, models)
    return {
        "$schema": "https://charm.land/crush.json",
        "providers": {
            PROVIDER_ID: {
                "name": "Corral",
                "type": "openai",
                "base_url": api_base(url),
                "api_key": f"${API_KEY_ENV}",
                "models": entries,
            }
        },
        "models": {
            "large": {"model": default, "provider": PROVIDER_ID},
            "small": {"model": default, "provider": PROVIDER_ID},
        },
    }
