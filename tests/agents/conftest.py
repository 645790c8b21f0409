from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from corral.agents.events import RunEvent, RunFinished
from corral.agents.registry import AgentRegistry
from corral.agents.router_models import RouterModels
from corral.agents.runner import RunContext, Runner
from corral.agents.spec import RunState
from corral.config.schema import CorralConfig, ScriptStep
from corral.llm.router import Router
from corral.llm.types import Message
from corral.testing.scripted import ScriptedProvider


class Harness:
    """A runner over a scripted model, for driving the loop without a server."""

    def __init__(self, steps: list[ScriptStep], agents: dict[str, Any], tools: dict[str, Any] | None = None,
                 context_window: int = 128000, toolsets: dict[str, Any] | None = None) -> None:
        self.config = CorralConfig.model_validate({
            "providers": {"script": {"type": "scripted"}},
            "models": {"scripted": {"provider": "script", "model": "scripted", "context_window": context_window}},
            "agents": agents, "tools": tools or {},
        })
        self.provider = ScriptedProvider.from_steps("script", steps, echo=False)
        self.router = Router(self.config.models, {"script": self.provider})
        self.registry = AgentRegistry.from_config(self.config, toolsets=toolsets)
        self.runner = Runner(self.registry.agents, RouterModels(self.router))

    async def run(self, text: str | None = None, *, agent: str = "assistant",
                  state: RunState | None = None) -> tuple[list[RunEvent], RunState]:
        state = state or RunState(agent, [Message.text("user", text or "")])
        events = [e async for e in self.runner.run(state, RunContext("run_test"))]
        return events, state

    @staticmethod
    def final(events: list[RunEvent]) -> RunFinished:
        last = events[-1]
        assert isinstance(last, RunFinished)
        return last


@pytest.fixture
def harness() -> Callable[..., Harness]:
    return Harness


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("postgres_url"))
