"""The scrape token of /metrics, and per-agent tokens and cost."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from corral.agents.registry import AgentRegistry
from corral.agents.router_models import RouterModels
from corral.agents.runner import RunContext, Runner
from corral.agents.spec import RunState
from corral.config.environment import apply_overrides
from corral.config.schema import CorralConfig, ObservabilityConfig, ScriptStep
from corral.llm.router import Router
from corral.llm.types import Message
from corral.telemetry.agent_metrics import AgentMetrics
from corral.telemetry.scrape import ScrapeAccess
from corral.testing.scripted import ScriptedProvider


def test_the_scrape_token_opens_metrics_and_nothing_is_open_by_default() -> None:
    closed = ScrapeAccess(ObservabilityConfig())
    assert not closed.allows({}) and not closed.allows({"authorization": "Bearer anything"})
    token = ScrapeAccess(ObservabilityConfig.model_validate({"metrics_token": "scrape-me-123"}))
    assert token.allows({"authorization": "Bearer scrape-me-123"})
    assert token.allows({"authorization": "bearer scrape-me-123"})
    assert not token.allows({"authorization": "Bearer scrape-me-1234"})
    assert not token.allows({"authorization": "Basic scrape-me-123"})
    assert not token.allows({})
    assert ScrapeAccess(ObservabilityConfig(public_metrics=True)).allows({})


def test_corral_metrics_token_fills_the_config() -> None:
    raw: dict[str, object] = {}
    notes, issues = apply_overrides(raw, {"CORRAL_METRICS_TOKEN": "t0k"})
    assert not issues and raw == {"observability": {"metrics_token": "t0k"}}
    assert "CORRAL_METRICS_TOKEN fills observability.metrics_token" in notes


async def test_agent_model_calls_are_counted_per_agent() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)

    async def meter(alias, ctx, usage, started) -> None:
        metrics.model_call(str(ctx.agent), input_tokens=usage.input_tokens,
                           output_tokens=usage.output_tokens, cost_usd=0.5)

    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": {"assistant": {"model": "scripted", "agent_tools": ["researcher"]},
                   "researcher": {"model": "scripted"}},
    })
    provider = ScriptedProvider.from_steps("script", [
        ScriptStep(tool_calls=[{"name": "researcher", "arguments": {"input": "q"}}],
                   usage={"input_tokens": 10, "output_tokens": 2}),
        ScriptStep(text="a", usage={"input_tokens": 4, "output_tokens": 1}),
        ScriptStep(text="done", usage={"input_tokens": 12, "output_tokens": 3})], echo=False)
    registry_ = AgentRegistry.from_config(config)
    runner = Runner(registry_.agents, RouterModels(Router(config.models, {"script": provider}), meter))
    events = [e async for e in runner.run(RunState("assistant", [Message.text("user", "go")]), RunContext("run_m"))]
    assert events[-1].output == "done"
    text = generate_latest(registry).decode()
    assert 'corral_agent_tokens_total{agent="assistant",kind="input"} 22.0' in text
    assert 'corral_agent_tokens_total{agent="assistant",kind="output"} 5.0' in text
    assert 'corral_agent_tokens_total{agent="researcher",kind="input"} 4.0' in text
    assert 'corral_agent_cost_usd_total{agent="assistant"} 1.0' in text
    assert 'corral_agent_cost_usd_total{agent="researcher"} 0.5' in text
