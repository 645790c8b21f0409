"""The gateway the console tests serve: a master key, an echo model, a slow scripted
model behind an agent (so a run can be followed while it runs), and a provider key that
must never appear in a page."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider

MASTER = "sk-master-console-test-0123456789"
PROVIDER_SECRET = "sk-provider-secret-never-shown-42"
SLOW = ScriptStep(text="Counting sheep: one two three four five six seven eight.", chunk_delay=0.25)


def gateway_app(database_url: str | None = None, **extra: Any) -> Starlette:
    config = CorralConfig.model_validate({
        "auth": {"master_key": MASTER},
        "providers": {"echo": {"type": "scripted"}, "slow": {"type": "scripted"},
                      "upstream": {"type": "openai", "api_key": PROVIDER_SECRET, "base_url": "http://127.0.0.1:9/v1",
                                   "enabled": False}},
        "models": {"echo": {"provider": "echo", "model": "echo"}, "slow": {"provider": "slow", "model": "slow"}},
        "agents": {"counter": {"model": "slow", "description": "Counts slowly, for watching a run live."}},
        "runs": {"poll_interval": 0.05},
        **({"database": {"url": database_url}} if database_url else {}),
        **extra,
    })
    providers = {"echo": ScriptedProvider.from_steps("echo", [], echo=True),
                 "slow": ScriptedProvider.from_steps("slow", [SLOW], echo=False)}
    return create_app(config, providers=providers)
