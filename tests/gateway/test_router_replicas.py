"""Router cooldowns shared by replicas through Redis: a deployment one replica cooled
down is skipped by the others (and by a replica that starts later) until the cooldown
ends; without Redis each replica keeps its own, and requests never wait on Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from corral.config.schema import CorralConfig
from corral.gateway.app import Gateway, create_app
from corral.llm.cooldowns import RedisHealth
from corral.llm.router import DeploymentState
from corral.testing.fakes import FakeOpenAI, Reply
from corral.testing.server import free_port, serve_app

KEY = "sk-upstream-test"


def replica_config(tmp_path: Path, name: str, bad: FakeOpenAI, good: FakeOpenAI, cache_url: str | None,
                   prefix: str) -> CorralConfig:
    provider = {"type": "openai", "api_key": KEY}
    return CorralConfig.model_validate({
        "providers": {"bad": {**provider, "base_url": bad.base_url}, "good": {**provider, "base_url": good.base_url}},
        "models": {"chat": {"deployments": [{"provider": "bad", "model": "gpt-4o-mini"},
                                            {"provider": "good", "model": "gpt-4o-mini"}],
                            "num_retries": 3}},
        "router": {"allowed_fails": 2, "cooldown_seconds": 30, "backoff_base": 0, "backoff_max": 0},
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / name}.db"},
        "cache": {"url": cache_url, "prefix": prefix},
        "verification": {"enabled": False},
    })


Replica = tuple[openai.AsyncOpenAI, Gateway]


@asynccontextmanager
async def replicas(tmp_path: Path, bad: FakeOpenAI, good: FakeOpenAI, cache_url: str | None,
                   prefix: str) -> AsyncIterator[Callable[[str], Any]]:
    """``await start("a")`` -> (an openai SDK client on that replica, its Gateway)."""
    async with AsyncExitStack() as stack:
        async def start(name: str) -> Replica:
            app = create_app(replica_config(tmp_path, name, bad, good, cache_url, prefix))
            base_url = await stack.enter_async_context(serve_app(app))
            sdk = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
            stack.push_async_callback(sdk.close)
            return sdk, app.state.gateway

        yield start


def bad_state(gateway: Gateway) -> DeploymentState:
    return next(s for s in gateway.router.deployment_states() if s.deployment.provider == "bad")


async def until(predicate: Callable[[], bool], seconds: float = 3.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.01)


async def ask(sdk: openai.AsyncOpenAI, n: int) -> list[str]:
    answers = []
    for i in range(n):
        reply = await sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"q{i}"}])
        answers.append(reply.choices[0].message.content or "")
    return answers


async def cool_down_bad(sdk: openai.AsyncOpenAI, gateway: Gateway, bad: FakeOpenAI) -> None:
    """Ask replica A until its router has cooled the failing deployment down."""
    for _ in range(40):
        await ask(sdk, 1)
        if bad_state(gateway).cooling(gateway.router._clock()):
            break
    assert bad_state(gateway).cooling(gateway.router._clock())
    assert len(bad.requests) == 2  # allowed_fails


@pytest.mark.redis
async def test_a_deployment_cooled_down_on_one_replica_gets_no_traffic_from_the_others(
    tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: Any,
) -> None:
    async with (FakeOpenAI(default=Reply.error(503), api_key=KEY) as bad, FakeOpenAI(api_key=KEY) as good,
                replicas(tmp_path, bad, good, redis_url, redis_prefix) as start):
        (sdk_a, gw_a), (sdk_b, gw_b) = await start("a"), await start("b")
        await cool_down_bad(sdk_a, gw_a, bad)
        await until(lambda: bad_state(gw_b).cooling(gw_b.router._clock()))  # the announcement reached B

        answers = await ask(sdk_b, 20)
        assert answers == [f"You said: q{i}" for i in range(20)]
        assert len(bad.requests) == 2  # B never tried the deployment A cooled down
        remaining = bad_state(gw_b).cooldown_until - gw_b.router._clock()
        assert 25 < remaining <= 30

        # A replica that starts now reads the cooldowns in force before it serves.
        sdk_c, gw_c = await start("c")
        assert bad_state(gw_c).cooling(gw_c.router._clock())
        assert await ask(sdk_c, 10) == [f"You said: q{i}" for i in range(10)]
        assert len(bad.requests) == 2

        stored = await redis_client.zrange(f"{redis_prefix}router:cooldowns", 0, -1)
        assert stored == [b'["chat","bad/gpt-4o-mini"]']

        # A success after a cooldown ends it on every replica.
        health_a: RedisHealth = gw_a.router_health
        health_a.recovered("chat", "bad/gpt-4o-mini")
        await until(lambda: not bad_state(gw_b).cooling(gw_b.router._clock())
                    and not bad_state(gw_c).cooling(gw_c.router._clock()))
        assert await redis_client.zcard(f"{redis_prefix}router:cooldowns") == 0


@pytest.mark.redis
async def test_latency_averages_seed_a_replica_that_never_called_the_deployment(
    tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: Any,
) -> None:
    async with (FakeOpenAI(api_key=KEY) as first, FakeOpenAI(api_key=KEY) as second,
                replicas(tmp_path, first, second, redis_url, redis_prefix) as start):
        (sdk_a, gw_a), (_, gw_b) = await start("a"), await start("b")
        await ask(sdk_a, 24)  # the shuffle picks each deployment at random: 24 calls reach both (1 - 2**-23)
        measured = {s.key: s.latency for s in gw_a.router.deployment_states()}
        assert all(v is not None and v > 0 for v in measured.values())
        assert all(s.latency is None for s in gw_b.router.deployment_states())

        await gw_a.router_health.sync_latency()
        await gw_b.router_health.sync_latency()
        assert {s.key: s.latency for s in gw_b.router.deployment_states()} == measured


async def test_with_redis_down_each_replica_cools_down_on_its_own_and_requests_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.DEBUG, logger="corral.router")
    async with (FakeOpenAI(default=Reply.error(503), api_key=KEY) as bad, FakeOpenAI(api_key=KEY) as good,
                replicas(tmp_path, bad, good, down, "corral:") as start):
        loop = asyncio.get_running_loop()
        began = loop.time()
        (sdk_a, gw_a), (sdk_b, gw_b) = await start("a"), await start("b")
        assert loop.time() - began < 5  # startup does not wait out Redis
        await cool_down_bad(sdk_a, gw_a, bad)
        assert not bad_state(gw_b).cooling(gw_b.router._clock())  # nothing shared...
        answers = await ask(sdk_b, 20)  # ...but B still answers, and cools down by itself
        assert answers == [f"You said: q{i}" for i in range(20)]
        assert len(bad.requests) == 4
        assert bad_state(gw_b).cooling(gw_b.router._clock())
    # One warning per replica for the outage; what could not be shared meanwhile is debug detail.
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "corral.router"]
    assert sum(level == logging.WARNING and "router health channel unavailable" in m for level, m in logged) == 2
    assert any("could not share the cooldown of chat -> bad/gpt-4o-mini" in m for _, m in logged)
