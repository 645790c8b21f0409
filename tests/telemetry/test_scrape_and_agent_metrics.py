"""The scrape token of /metrics, and per-agent tokens and cost."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from tests.agents.conftest import Harness

from corral.agents.router_models import RouterModels
from corral.config.environment import apply_overrides
from corral.config.schema import ObservabilityConfig, ScriptStep
from corral.telemetry.agent_metrics import AgentMetrics
from corral.telemetry.scrape import ScrapeAccess


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

    h = Harness([ScriptStep(tool_calls=[{"name": "researcher", "arguments": {"input": "q"}}],
                            usage={"input_tokens": 10, "output_tokens": 2}),
                 ScriptStep(text="a", usage={"input_tokens": 4, "output_tokens": 1}),
                 ScriptStep(text="done", usage={"input_tokens": 12, "output_tokens": 3})],
                {"assistant": {"model": "scripted", "agent_tools": ["researcher"]},
                 "researcher": {"model": "scripted"}})
    h.runner.models = RouterModels(h.router, meter)
    await h.run("go")
    text = generate_latest(registry).decode()
    assert 'corral_agent_tokens_total{agent="assistant",kind="input"} 22.0' in text
    assert 'corral_agent_tokens_total{agent="assistant",kind="output"} 5.0' in text
    assert 'corral_agent_tokens_total{agent="researcher",kind="input"} 4.0' in text
    assert 'corral_agent_cost_usd_total{agent="assistant"} 1.0' in text
    assert 'corral_agent_cost_usd_total{agent="researcher"} 0.5' in text
