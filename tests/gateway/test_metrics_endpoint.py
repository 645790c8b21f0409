"""`GET /metrics`: what every API surface records, and the seams other components feed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from corral.config.schema import CorralConfig, ModelConfig, ProviderConfig, ScriptStep
from corral.gateway.app import create_app
from corral.gateway.auth import ANONYMOUS
from corral.gateway.errors import ApiError
from corral.telemetry.metrics import GatewayMetrics
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


def config(**overrides: object) -> CorralConfig:
    base: dict[str, object] = {
        "providers": {"script": ProviderConfig(type="scripted")},
        "models": {"scripted": ModelConfig(provider="script", model="scripted", num_retries=0),
                   "embedder": ModelConfig(provider="script", model="e", embedding=True)},
        **overrides,
    }
    return CorralConfig.model_validate(base)


@asynccontextmanager
async def gateway(steps: list[ScriptStep], **overrides: object) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_app(config(**overrides), providers={"script": ScriptedProvider.from_steps("script", steps)})
    async with serve_app(app) as base_url:
        yield base_url, app


async def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_surface_counts_requests_tokens_latency_and_overhead() -> None:
    steps = [ScriptStep(text="a b", usage={"input_tokens": 10, "output_tokens": 2, "cached_input_tokens": 4})] * 4
    async with gateway(steps) as (url, _):
        oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        ant = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "hi"}]
        await oai.chat.completions.create(model="scripted", messages=messages)
        stream = await oai.chat.completions.create(model="scripted", messages=messages, stream=True)
        _ = [chunk async for chunk in stream]
        await ant.messages.create(model="scripted", max_tokens=5, messages=messages)
        await oai.responses.create(model="scripted", input="hi")
        await oai.embeddings.create(model="embedder", input=["one two three four"])
        await oai.close()
        await ant.close()
        samples = await scrape(url)
    for surface in ("openai", "anthropic", "responses"):
        expected = 2.0 if surface == "openai" else 1.0
        assert value(samples, "corral_requests_total", surface=surface, model="scripted", status="200") == expected
    assert value(samples, "corral_requests_total", surface="embeddings", model="embedder", status="200") == 1.0
    assert value(samples, "corral_tokens_total", model="scripted", kind="input") == 40.0
    assert value(samples, "corral_tokens_total", model="scripted", kind="output") == 8.0
    assert value(samples, "corral_tokens_total", model="scripted", kind="cached_input") == 16.0
    assert value(samples, "corral_tokens_total", model="embedder", kind="input") == 5.0  # 18 characters
    assert value(samples, "corral_request_duration_seconds_count", surface="openai", model="scripted") == 2.0
    assert value(samples, "corral_time_to_first_token_seconds_count", surface="openai", model="scripted") == 1.0
    assert value(samples, "corral_overhead_seconds_count", surface="openai") == 2.0
    assert value(samples, "corral_overhead_seconds_count", surface="embeddings") == 1.0
    assert value(samples, "corral_overhead_seconds_sum", surface="openai") > 0


async def test_upstream_errors_are_counted_by_type_and_status() -> None:
    async with gateway([ScriptStep(error="rate_limit"), ScriptStep(error="unavailable")]) as (url, _):
        async with httpx.AsyncClient(base_url=url) as http:
            body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
            assert (await http.post("/v1/chat/completions", json=body)).status_code == 429
            assert (await http.post("/v1/chat/completions", json={**body, "stream": True})).status_code == 502
        samples = await scrape(url)
    assert value(samples, "corral_requests_total", surface="openai", model="scripted", status="429") == 1.0
    assert value(samples, "corral_errors_total", surface="openai", model="scripted", type="rate_limit_exceeded") == 1
    assert value(samples, "corral_errors_total", surface="openai", model="scripted", type="upstream_unavailable") == 1


class RefuseEverything:
    """Stands in for admission (`Access`): counts, then refuses."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def authenticate(self, request):
        return ANONYMOUS

    async def admit(self, request, call, principal=None) -> None:
        self.metrics.limit_rejections.labels(limit="rpm", scope="key").inc()
        raise ApiError(429, "Rate limit reached", code="rate_limit_exceeded")


async def test_refusals_after_admit_are_counted_and_limit_seam_is_published() -> None:
    async with gateway([]) as (url, app):
        metrics = app.state.gateway.metrics
        app.state.gateway.pipeline.access = RefuseEverything(metrics)
        async with anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as ant:
            with pytest.raises(anthropic.RateLimitError):
                await ant.messages.create(model="scripted", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        samples = await scrape(url)
    assert value(samples, "corral_requests_total", surface="anthropic", model="scripted", status="429") == 1.0
    assert value(samples, "corral_errors_total", surface="anthropic", model="scripted", type="rate_limited") == 1.0
    assert value(samples, "corral_limit_rejections_total", limit="rpm", scope="key") == 1.0


async def test_queue_depth_deployment_health_and_cost_from_pricing() -> None:
    router = {"allowed_fails": 1, "cooldown_seconds": 300, "backoff_base": 0.0}
    pricing = {"scripted": {"input": 2.0, "output": 10.0}}
    steps = [ScriptStep(text="ok"), ScriptStep(error="unavailable")]
    async with gateway(steps, router=router, pricing=pricing) as (url, app):
        metrics: GatewayMetrics = app.state.gateway.metrics
        metrics.watch_queue("audit", lambda: 7)
        async with httpx.AsyncClient(base_url=url) as http:
            body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
            await http.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "x" * 40}]})
            await http.post("/v1/chat/completions", json=body)  # fails: the deployment cools down
        samples = await scrape(url)
    assert value(samples, "corral_batch_queue_depth", writer="audit") == 7.0
    assert ("corral_batch_queue_depth", (("writer", "usage"),)) in samples  # the usage writer, idle: 0
    labels = {"alias": "scripted", "deployment": "script/scripted"}
    assert value(samples, "corral_deployment_healthy", **labels) == 0.0
    assert 200 < value(samples, "corral_deployment_cooldown_seconds", **labels) <= 300
    assert value(samples, "corral_cost_usd_total", model="scripted") == (10 * 2.0 + 1 * 10.0) / 1_000_000


async def test_each_app_has_its_own_registry_and_metrics_can_be_turned_off() -> None:
    async with gateway([]) as (first, _), gateway([]) as (second, _):
        async with httpx.AsyncClient() as http:
            await http.post(f"{first}/v1/chat/completions",
                            json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
        assert value(await scrape(first), "corral_requests_total", surface="openai", model="scripted",
                     status="200") == 1.0
        assert value(await scrape(second), "corral_requests_total", surface="openai", model="scripted",
                     status="200") == 0.0
    async with gateway([], observability={"metrics": False}) as (url, app):
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/metrics")).status_code == 404
        assert app.state.gateway.metrics is None
