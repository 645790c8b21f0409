"""Router: strategies, retries with backoff and retry-after, fallbacks, cooldowns."""

from __future__ import annotations

import random

import pytest

from corral.config.schema import ModelConfig, RouterConfig, ScriptStep
from corral.llm import errors
from corral.llm.router import CallContext, Router
from corral.llm.types import ChatRequest, Message, StreamAccumulator
from corral.testing.scripted import ScriptedProvider


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def request() -> ChatRequest:
    return ChatRequest(model="alias", messages=[Message.text("user", "hi")])


def build(models: dict[str, dict], providers: dict[str, list[ScriptStep]], **settings: float) -> tuple[Router, FakeTime, dict[str, ScriptedProvider]]:
    fake = FakeTime()
    built = {name: ScriptedProvider.from_steps(name, steps) for name, steps in providers.items()}
    router = Router({k: ModelConfig.model_validate(v) for k, v in models.items()}, built,
                    settings=RouterConfig(**settings), rng=random.Random(7), sleep=fake.sleep, clock=fake.clock)
    return router, fake, built


async def test_retryable_error_is_retried_with_jittered_exponential_backoff() -> None:
    router, fake, providers = build(
        {"m": {"provider": "a", "model": "x", "num_retries": 3}},
        {"a": [ScriptStep(error="unavailable"), ScriptStep(error="timeout"), ScriptStep(text="ok")]},
        backoff_base=0.5, allowed_fails=5,
    )
    ctx = CallContext()
    result = await router.complete("m", request(), ctx)
    assert result.message.text_content == "ok"
    assert ctx.attempts == 3
    assert len(fake.sleeps) == 2
    assert 0 <= fake.sleeps[0] <= 0.5 and 0 <= fake.sleeps[1] <= 1.0
    assert [r.model for r in providers["a"].requests] == ["x", "x", "x"]


async def test_retry_after_is_honoured() -> None:
    router, fake, _ = build({"m": {"provider": "a", "model": "x"}},
                            {"a": [ScriptStep(error="rate_limit"), ScriptStep(text="ok")]})
    await router.complete("m", request(), CallContext())
    assert fake.sleeps == [1.0]  # the scripted 429 says retry-after: 1


async def test_retry_after_longer_than_the_cap_goes_straight_to_fallback() -> None:
    router, fake, _ = build(
        {"m": {"provider": "a", "model": "x", "fallbacks": ["backup"]}, "backup": {"provider": "b", "model": "y"}},
        {"a": [ScriptStep(error="rate_limit")], "b": [ScriptStep(text="from backup")]},
        max_retry_after=0.5,
    )
    ctx = CallContext()
    result = await router.complete("m", request(), ctx)
    assert result.message.text_content == "from backup"
    assert fake.sleeps == []
    assert (ctx.alias, ctx.provider, ctx.upstream_model) == ("backup", "b", "y")


async def test_fallback_after_retries_are_exhausted() -> None:
    router, _, providers = build(
        {"m": {"provider": "a", "model": "x", "num_retries": 1, "fallbacks": ["backup"]},
         "backup": {"provider": "b", "model": "y"}},
        {"a": [ScriptStep(error="unavailable")] * 2, "b": [ScriptStep(text="saved")]},
    )
    providers["a"]._echo = False
    ctx = CallContext()
    result = await router.complete("m", request(), ctx)
    assert result.message.text_content == "saved"
    assert ctx.attempts == 3
    assert len(ctx.errors) == 2 and all("UpstreamUnavailableError" in e for e in ctx.errors)


async def test_context_length_error_goes_to_the_bigger_context_alias_only() -> None:
    router, fake, providers = build(
        {"small": {"provider": "a", "model": "x", "fallbacks": ["other"], "context_fallbacks": ["big"]},
         "big": {"provider": "b", "model": "y-128k"}, "other": {"provider": "c", "model": "z"}},
        {"a": [ScriptStep(error="context_length")], "b": [ScriptStep(text="fits")], "c": [ScriptStep(text="no")]},
    )
    ctx = CallContext()
    result = await router.complete("small", request(), ctx)
    assert result.message.text_content == "fits"
    assert ctx.upstream_model == "y-128k"
    assert fake.sleeps == [] and providers["c"].requests == []


async def test_bad_request_is_neither_retried_nor_fallen_back() -> None:
    router, _, providers = build(
        {"m": {"provider": "a", "model": "x", "fallbacks": ["backup"]}, "backup": {"provider": "b", "model": "y"}},
        {"a": [ScriptStep(error="bad_request")], "b": [ScriptStep(text="no")]},
    )
    with pytest.raises(errors.BadRequestError):
        await router.complete("m", request(), CallContext())
    assert len(providers["a"].requests) == 1 and providers["b"].requests == []


async def test_failing_deployment_cools_down_and_comes_back() -> None:
    router, fake, providers = build(
        {"m": {"deployments": [{"provider": "a", "model": "x", "weight": 1e6}, {"provider": "b", "model": "x"}],
               "num_retries": 0}},
        {"a": [ScriptStep(error="unavailable")] * 2, "b": []},
        allowed_fails=2, cooldown_seconds=30,
    )
    for _ in range(2):  # `a` is (almost) always picked while healthy: fail it twice
        with pytest.raises(errors.UpstreamUnavailableError):
            await router.complete("m", request(), CallContext())
    state_a = next(s for s in router.deployment_states() if s.deployment.provider == "a")
    assert state_a.consecutive_fails == 2 and state_a.cooling(fake.now)
    for _ in range(10):
        ctx = CallContext()
        await router.complete("m", request(), ctx)
        assert ctx.provider == "b"
    assert len(providers["a"].requests) == 2
    fake.now += 31
    ctx = CallContext()
    await router.complete("m", request(), ctx)
    assert ctx.provider == "a"  # back after the cooldown; its script is used up, so it echoes
    assert state_a.consecutive_fails == 0


async def test_auth_error_on_one_deployment_moves_to_the_next_without_waiting() -> None:
    router, fake, _ = build(
        {"m": {"deployments": [{"provider": "a", "model": "x", "weight": 1000}, {"provider": "b", "model": "x",
                                                                                   "weight": 0.001}]}},
        {"a": [ScriptStep(error="authentication")], "b": [ScriptStep(text="b works")]},
    )
    ctx = CallContext()
    result = await router.complete("m", request(), ctx)
    assert result.message.text_content == "b works"
    assert fake.sleeps == [] and ctx.attempts == 2


async def test_least_busy_and_lowest_latency_strategies() -> None:
    router, _, _ = build(
        {"busy": {"deployments": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "x"}],
                  "strategy": "least-busy"},
         "fast": {"deployments": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "x"}],
                  "strategy": "lowest-latency"}},
        {"a": [], "b": []},
    )
    states = {s.deployment.provider: s for s in router.deployment_states() if s.alias == "busy"}
    states["a"].in_flight = 5
    assert {router._pick("busy", set()).deployment.provider for _ in range(20)} == {"b"}
    fast = {s.deployment.provider: s for s in router.deployment_states() if s.alias == "fast"}
    fast["a"].latency, fast["b"].latency = 0.050, 0.500
    assert {router._pick("fast", set()).deployment.provider for _ in range(20)} == {"a"}
    fast["a"].latency = 0.9
    assert router._pick("fast", set()).deployment.provider == "b"


async def test_stream_is_retried_before_its_first_event_only() -> None:
    router, _, _ = build({"m": {"provider": "a", "model": "x"}},
                         {"a": [ScriptStep(error="unavailable"), ScriptStep(text="streamed fine")]})
    ctx = CallContext()
    acc = StreamAccumulator()
    async for event in router.stream("m", request(), ctx):
        acc.add(event)
    assert acc.result().message.text_content == "streamed fine"
    assert ctx.attempts == 2 and ctx.first_event_at is not None


async def test_per_request_timeout_raises_timeout_and_retries() -> None:
    fake = FakeTime()
    providers = {"a": ScriptedProvider.from_steps("a", [ScriptStep(text="late", delay=2.0), ScriptStep(text="on time")])}
    router = Router({"m": ModelConfig(provider="a", model="x", timeout=0.05, num_retries=1)}, providers,
                    rng=random.Random(1), sleep=fake.sleep)
    ctx = CallContext()
    result = await router.complete("m", request(), ctx)
    assert result.message.text_content == "on time"
    assert "UpstreamTimeout" in ctx.errors[0]


async def test_unknown_alias_and_passthrough_names() -> None:
    providers = {"openai": ScriptedProvider.from_steps("openai", [])}
    router = Router({}, providers, passthrough=frozenset({"openai"}))
    assert router.has_model("openai/gpt-4o-mini")
    assert not router.has_model("anthropic/claude") and not router.has_model("nothing")
    ctx = CallContext()
    await router.complete("openai/gpt-4o-mini", request(), ctx)
    assert ctx.upstream_model == "gpt-4o-mini"
    with pytest.raises(errors.NotFoundError):
        await router.complete("nothing", request(), CallContext())
