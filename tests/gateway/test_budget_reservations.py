"""Budgets hold at any concurrency: each admitted call holds its maximum cost until it
is settled, so a budget is overrun by at most one call's maximum; a budget counter that
is gone is rebuilt from the stored spend before the next admission; a threshold crossed
is told once. The same on every counter backend (in process, the workers' shared file,
Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.gateway.auth import Principal
from corral.gateway.counters import MemoryCounters, RedisCounters
from corral.gateway.limits import BudgetRule, Counters, Limiter, LimitExceeded
from corral.gateway.shared_counters import SharedFileCounters
from corral.llm.types import Usage
from corral.store import KeyRecord

KEY = KeyRecord(id="k1", key_hash="h", key_prefix="p", max_budget=0.05, budget_duration="30d")
PRINCIPAL = Principal(kind="key", subject="k", key_id="k1", key=KEY)
COST = 0.002


@pytest.fixture(params=["memory", "shared-file", "redis"])
async def counters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Counters]:
    made: Counters
    if request.param == "memory":
        made = MemoryCounters()
    elif request.param == "shared-file":
        made = SharedFileCounters(str(tmp_path / "limits.db"))
    else:
        prefix = request.getfixturevalue("redis_prefix")
        made = RedisCounters.from_url(request.getfixturevalue("redis_url"), prefix=prefix)
    yield made
    if isinstance(made, RedisCounters):
        keys = [k async for k in made.client.scan_iter(match=f"{made.prefix}*")]
        if keys:
            await made.client.delete(*keys)
    await made.aclose()


async def test_32_concurrent_calls_on_a_budget_are_admitted_only_while_their_maximum_fits(counters: Counters) -> None:
    limiter = Limiter(counters)

    async def one() -> bool:
        try:
            reservation = await limiter.check(PRINCIPAL, "m", max_cost=COST)
        except LimitExceeded as exc:
            assert exc.status == 402 and exc.which == "budget"
            return False
        await asyncio.sleep(0.05)  # a slow upstream: every admission happens while the others run
        await limiter.record(reservation, Usage(10, 10), COST)
        return True

    answered = sum(await asyncio.gather(*(one() for _ in range(32))))
    assert answered == 25  # $0.05 / $0.002: the held maxima fill the budget, no call over
    assert await limiter.spend(KEY) == pytest.approx(25 * COST)
    with pytest.raises(LimitExceeded):
        await limiter.check(PRINCIPAL, "m", max_cost=COST)


async def test_a_call_that_ends_without_cost_releases_what_it_held(counters: Counters) -> None:
    limiter = Limiter(counters)
    held = [await limiter.check(PRINCIPAL, "m", max_cost=0.02) for _ in range(3)]  # 0.06 held >= 0.05
    with pytest.raises(LimitExceeded) as refused:
        await limiter.check(PRINCIPAL, "m", max_cost=0.02)
    assert refused.value.retry_after == 1.0  # held by calls in flight: try again shortly
    for reservation in held:
        await limiter.release(reservation)
    await limiter.check(PRINCIPAL, "m", max_cost=0.02)


async def test_a_missing_budget_counter_is_seeded_from_the_stored_spend_before_admission(counters: Counters) -> None:
    asked: list[BudgetRule] = []

    async def stored(rule: BudgetRule) -> float:
        asked.append(rule)
        return 0.049

    limiter = Limiter(counters, stored_spend=stored)
    reservation = await limiter.check(PRINCIPAL, "m", max_cost=COST)
    assert [r.owner for r in asked] == ["k1"]
    crossings = await limiter.record(reservation, Usage(10, 10), COST)
    assert [(c.before, c.after) for c in crossings] == [(pytest.approx(0.049), pytest.approx(0.051))]
    with pytest.raises(LimitExceeded):
        await limiter.check(PRINCIPAL, "m", max_cost=COST)
    assert len(asked) == 1  # the counter exists now: no second query


async def test_budget_alerts_fire_once_per_threshold_crossed(counters: Counters) -> None:
    from corral.gateway.budgets import BudgetAlerts

    sent: list[dict[str, Any]] = []

    class Recorder:
        def notify(self, alert: dict[str, Any]) -> None:
            sent.append(alert)

    alerts = BudgetAlerts(Recorder(), [50, 80, 100])  # type: ignore[arg-type]
    limiter = Limiter(counters)
    for _ in range(30):
        try:
            reservation = await limiter.check(PRINCIPAL, "m", max_cost=COST)
        except LimitExceeded:
            break
        alerts.crossed(await limiter.record(reservation, Usage(10, 10), COST))
    assert [a["data"]["threshold_percent"] for a in sent] == [50, 80, 100]
    assert {(a["type"], a["scope"], a["owner"]) for a in sent} == {("budget.threshold", "key", "k1")}
    assert [a["data"]["spend_usd"] for a in sent] == [pytest.approx(0.026), pytest.approx(0.04), pytest.approx(0.05)]
