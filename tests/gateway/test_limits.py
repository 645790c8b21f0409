"""Limits and budgets, with the same behaviour in memory and in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.gateway.auth import Principal
from corral.gateway.counters import MemoryCounters, RedisCounters
from corral.gateway.limits import Limiter, LimitExceeded, budget_window, parse_duration
from corral.llm.types import Usage
from corral.store import KeyRecord, TeamRecord


def key_principal(**limits: Any) -> Principal:
    record = KeyRecord(id=limits.pop("id", "k1"), key_hash="h", key_prefix="sk-corral-x", **limits)
    return Principal(kind="key", subject="k", key_id=record.id, key=record)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        built = Limiter(MemoryCounters(), model_limits={"small": (3, None)})
    else:
        import redis.asyncio as aioredis

        prefix = request.getfixturevalue("redis_prefix")
        client = aioredis.from_url(request.getfixturevalue("redis_url"))
        built = Limiter(RedisCounters(client, prefix=prefix), model_limits={"small": (3, None)})
    yield built
    if request.param == "redis":
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    await built.aclose()


async def test_rpm_admits_exactly_the_limit_then_refuses_with_retry_after(limiter: Limiter) -> None:
    principal = key_principal(rpm=5)
    results = await asyncio.gather(*(limiter.check(principal, "m") for _ in range(8)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(refused) == 3
    assert refused[0].which == "key_rpm" and refused[0].status == 429
    assert refused[0].retry_after is not None and 0 < refused[0].retry_after <= 60
    assert refused[0].headers["retry-after"].isdigit()


async def test_per_model_limit_holds_for_all_callers_and_key_model_limit_for_one(limiter: Limiter) -> None:
    a, b = key_principal(id="a"), key_principal(id="b", model_limits={"m": {"rpm": 1}})
    for principal in (a, b, a):
        await limiter.check(principal, "small")
    with pytest.raises(LimitExceeded) as caught:
        await limiter.check(b, "small")
    assert caught.value.which == "model_rpm"
    await limiter.check(b, "m")
    with pytest.raises(LimitExceeded) as again:
        await limiter.check(b, "m")
    assert again.value.which == "key_model_rpm"
    await limiter.check(a, "m")  # a has no per-model limit on m


async def test_tpm_refuses_once_the_minute_has_used_the_tokens(limiter: Limiter) -> None:
    principal = key_principal(tpm=100)
    first = await limiter.check(principal, "m")
    await limiter.record(first, Usage(60, 30), 0.0)
    second = await limiter.check(principal, "m")  # 90 < 100
    await limiter.record(second, Usage(5, 5), 0.0)
    with pytest.raises(LimitExceeded) as caught:
        await limiter.check(principal, "m")
    assert caught.value.which == "key_tpm"


async def test_budget_blocks_once_spend_reaches_it_and_counts_only_this_period(limiter: Limiter) -> None:
    principal = key_principal(max_budget=1.0, budget_duration="1d")
    reservation = await limiter.check(principal, "m")
    await limiter.record(reservation, Usage(1, 1), 0.6)
    reservation = await limiter.check(principal, "m")  # 0.6 < 1.0: allowed, and it goes over
    await limiter.record(reservation, Usage(1, 1), 0.6)
    with pytest.raises(LimitExceeded) as caught:
        await limiter.check(principal, "m")
    assert caught.value.status == 402 and caught.value.which == "budget"
    assert caught.value.code == "budget_exceeded"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 86400
    assert principal.key is not None
    assert await limiter.spend(principal.key) == pytest.approx(1.2)


async def test_a_team_budget_spent_by_one_key_blocks_every_key_of_the_team(limiter: Limiter) -> None:
    team = TeamRecord(id="t1", name="research", max_budget=1.0, budget_duration="30d")
    first, second = (
        Principal(kind="key", subject=k, key_id=k, team_id="t1", team=team,
                  key=KeyRecord(id=k, key_hash=k, key_prefix="p", team_id="t1", max_budget=10.0))
        for k in ("k1", "k2")
    )
    reservation = await limiter.check(first, "m")
    await limiter.record(reservation, Usage(1, 1), 1.25)
    with pytest.raises(LimitExceeded) as caught:
        await limiter.check(second, "m")
    assert caught.value.which == "team_budget" and caught.value.status == 402
    assert "team" in caught.value.message
    assert await limiter.spend(team) == pytest.approx(1.25)
    assert second.key is not None and await limiter.spend(second.key) == 0.0


async def test_seeded_spend_from_the_database_counts_but_never_overwrites(limiter: Limiter) -> None:
    principal = key_principal(max_budget=2.0)
    assert principal.key is not None
    await limiter.seed_budget(principal.key, 1.5)
    await limiter.seed_budget(principal.key, 0.0)  # a live counter wins over a later seed
    reservation = await limiter.check(principal, "m")
    await limiter.record(reservation, None, 0.5)
    with pytest.raises(LimitExceeded):
        await limiter.check(principal, "m")


async def test_unlimited_principals_never_touch_the_counters(limiter: Limiter) -> None:
    principal = Principal(kind="master", subject="master")
    for _ in range(50):
        await limiter.check(principal, "m")
    assert limiter.rejections == {}


def test_budget_periods_are_counted_from_the_key_creation() -> None:
    created = datetime(2026, 1, 1, 12, tzinfo=UTC)
    key = KeyRecord(id="k", key_hash="h", key_prefix="p", budget_duration="30d", created_at=created)
    window = budget_window(key, created + timedelta(days=45))
    assert window.index == 1
    assert window.start == created + timedelta(days=30) and window.end == created + timedelta(days=60)
    lifetime = budget_window(KeyRecord(id="k", key_hash="h", key_prefix="p", created_at=created))
    assert lifetime.end is None and lifetime.index == 0
    assert parse_duration("15m") == timedelta(minutes=15)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("monthly")


async def test_memory_rpm_window_slides(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    limiter = Limiter(MemoryCounters(clock=lambda: now[0]))
    principal = key_principal(rpm=2)
    await limiter.check(principal, "m")
    now[0] += 30
    await limiter.check(principal, "m")
    with pytest.raises(LimitExceeded) as caught:
        await limiter.check(principal, "m")
    assert caught.value.retry_after == pytest.approx(30)
    now[0] += 30.001  # the first request left the window
    await limiter.check(principal, "m")


async def test_when_redis_is_down_limited_keys_are_refused_not_let_through(scripted_server: Any) -> None:
    import httpx

    from corral.testing.server import free_port

    master = "sk-master-limits-0123456789"
    config = {"auth": {"master_key": master}, "cache": {"url": f"redis://127.0.0.1:{free_port()}/0"}}
    async with scripted_server(**config) as (base_url, _), httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        admin = {"authorization": f"Bearer {master}"}
        key = (await http.post("/admin/keys", json={"rpm": 1000}, headers=admin)).json()["key"]
        body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
        refused = await http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "limits_unavailable"


async def test_rejections_are_counted_in_the_metrics(scripted_server: Any) -> None:
    import httpx

    master = "sk-master-metrics-0123456789"
    async with scripted_server(auth={"master_key": master}) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, timeout=10
    ) as http:
        key = (await http.post("/admin/keys", json={"rpm": 1}, headers={"authorization": f"Bearer {master}"})).json()
        body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
        codes = [(await http.post("/v1/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {key['key']}"})).status_code for _ in range(3)]
        assert codes == [200, 429, 429]
        metrics = (await http.get("/metrics", headers={"authorization": f"Bearer {master}"})).text
        assert 'corral_limit_rejections_total{limit="rpm",scope="key"} 2.0' in metrics


async def test_spend_already_stored_counts_against_the_budget_after_a_restart(tmp_path: Any) -> None:
    import httpx
    from tests.gateway.conftest import scripted_config

    from corral.gateway.app import create_app
    from corral.store import Store, UsageRecord
    from corral.testing.scripted import ScriptedProvider
    from corral.testing.server import serve_app

    master = "sk-master-restart-0123456789"
    config = scripted_config(auth={"master_key": master}, database={"url": f"sqlite:///{tmp_path / 'c.db'}"})
    admin = {"authorization": f"Bearer {master}"}
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", [])})
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        key = (await http.post("/admin/keys", json={"max_budget": 1.0, "budget_duration": "1d"}, headers=admin)).json()
    # Spend recorded before the restart (by this or another process) ...
    store = await Store.open(config.database.url)
    await store.usage.insert_many([UsageRecord(request_id="old", model="scripted", key_id=key["id"], cost_usd=1.5)])
    await store.aclose()
    # ... blocks the key as soon as the gateway is back, with no counter in memory.
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", [])})
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        refused = await http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key['key']}"})
        assert refused.status_code == 402
        assert (await http.get(f"/admin/keys/{key['id']}", headers=admin)).json()["spend"] == 1.5


async def test_jwt_subjects_and_their_teams_each_count_against_their_own_limits(limiter: Limiter) -> None:
    from corral.config.schema import CallerLimits

    jwt = Limiter(limiter.counters, subject_limits=CallerLimits(rpm=2, max_budget=1.0, budget_duration="1d"),
                  team_limits=CallerLimits(rpm=3, max_budget=5.0))
    ana, bob, eve = (Principal(kind="jwt", subject=s, team_id="research") for s in ("ana", "bob", "eve"))
    for principal in (ana, ana, bob):
        await jwt.check(principal, "m")
    with pytest.raises(LimitExceeded) as subject_rpm:
        await jwt.check(ana, "m")
    assert subject_rpm.value.which == "subject_rpm" and "2 requests per minute for this caller" in subject_rpm.value.message
    with pytest.raises(LimitExceeded) as team_rpm:
        await jwt.check(eve, "m")  # eve is fresh, but research made 3 requests this minute
    assert team_rpm.value.which == "team_rpm" and "this caller's team" in team_rpm.value.message
    loner = Principal(kind="jwt", subject="loner")
    reservation = await jwt.check(loner, "m")
    await jwt.record(reservation, Usage(1, 1), 1.5)
    with pytest.raises(LimitExceeded) as budget:
        await jwt.check(loner, "m")
    assert budget.value.status == 402 and budget.value.which == "subject_budget"
    assert "this caller" in budget.value.message and budget.value.retry_after is not None
    # A team record of the same name (made with the admin API) brings its own budget.
    team = TeamRecord(id="t9", name="research", max_budget=0.5)
    member = Principal(kind="jwt", subject="zoe", team_id="t9", team=team)
    await jwt.record(await jwt.check(member, "m"), Usage(1, 1), 0.5)
    with pytest.raises(LimitExceeded) as team_budget:
        await jwt.check(member, "m")
    assert team_budget.value.which == "team_budget"
    assert await jwt.spend(team) == pytest.approx(0.5)
