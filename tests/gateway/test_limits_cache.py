"""What the limiter keeps between calls (its rules per key and model, the in-memory token
windows) must give the answers it gave when it rebuilt them on every call."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from corral.gateway.auth import Principal
from corral.gateway.counters import MemoryCounters
from corral.gateway.limits import Limiter, LimitExceeded
from corral.llm.types import Usage
from corral.store import KeyRecord, TeamRecord


def principal_of(record: KeyRecord, team: TeamRecord | None = None) -> Principal:
    return Principal(kind="key", subject="k", key_id=record.id, team_id=team.id if team else None, key=record,
                     team=team)


async def test_a_changed_key_or_team_record_gets_its_new_limits_on_the_next_call() -> None:
    limiter = Limiter(MemoryCounters())
    strict = KeyRecord(id="k1", key_hash="h", key_prefix="p", rpm=1)
    await limiter.check(principal_of(strict), "m")
    with pytest.raises(LimitExceeded):
        await limiter.check(principal_of(strict), "m")
    # The admin API raised the limit: the cache holds the new record, a new object.
    relaxed = KeyRecord(id="k1", key_hash="h", key_prefix="p", rpm=3)
    await limiter.check(principal_of(relaxed), "m")
    await limiter.check(principal_of(relaxed), "m")
    with pytest.raises(LimitExceeded):
        await limiter.check(principal_of(relaxed), "m")

    team = TeamRecord(id="t1", name="research")
    key = KeyRecord(id="k2", key_hash="h2", key_prefix="p", team_id="t1")
    assert (await limiter.check(principal_of(key, team), "m")).budgets == []
    budgeted = TeamRecord(id="t1", name="research", max_budget=1.0)
    reservation = await limiter.check(principal_of(key, budgeted), "m")
    assert [b.which for b in reservation.budgets] == ["team_budget"]
    await limiter.record(reservation, Usage(1, 1), 1.0)
    with pytest.raises(LimitExceeded) as caught:
        await limiter.check(principal_of(key, budgeted), "m")
    assert caught.value.which == "team_budget"
    assert (await limiter.check(principal_of(key, team), "m")).budgets == []  # the budget removed again


async def test_a_new_budget_period_starts_with_a_new_counter() -> None:
    limiter = Limiter(MemoryCounters())
    key = KeyRecord(id="k1", key_hash="h", key_prefix="p", max_budget=1.0, budget_duration="1s",
                    created_at=datetime.now(UTC) - timedelta(seconds=10))
    first = await limiter.check(principal_of(key), "m")
    await limiter.record(first, Usage(1, 1), 2.0)
    with pytest.raises(LimitExceeded):
        await limiter.check(principal_of(key), "m")
    await asyncio.sleep(1.05)  # the one-second period is over
    second = await limiter.check(principal_of(key), "m")
    assert second.budgets[0].window.index > first.budgets[0].window.index
    assert second.budgets[0].counter != first.budgets[0].counter


async def test_reservations_do_not_share_the_cached_lists() -> None:
    limiter = Limiter(MemoryCounters())
    key = KeyRecord(id="k1", key_hash="h", key_prefix="p", tpm=100, max_budget=5.0)
    one, two = await limiter.check(principal_of(key), "m"), await limiter.check(principal_of(key), "m")
    one.tpm_counters.append("tpm:extra")
    one.budgets.clear()
    assert two.tpm_counters == ["tpm:key:k1"] and len(two.budgets) == 1
    assert (await limiter.check(principal_of(key), "m")).tpm_counters == ["tpm:key:k1"]


def reference_tokens(buckets: dict[int, int], now_ms: float) -> tuple[int, int | None]:
    """The token window as a dict of seconds, summed on every check (the former code)."""
    floor = int(now_ms // 1000) - 59
    for second in [s for s in buckets if s < floor]:
        del buckets[second]
    return sum(buckets.values()), min(buckets, default=None)


@pytest.mark.parametrize("seed", range(5))
async def test_token_windows_match_summing_every_second_also_when_the_clock_goes_back(seed: int) -> None:
    rng = random.Random(seed)
    now = [1_000_000.0]
    counters = MemoryCounters(clock=lambda: now[0])
    reference: dict[str, dict[int, int]] = {"a": {}, "b": {}}
    for _ in range(2000):
        step = rng.choice([0.0, 0.2, 0.9, 3.0, 20.0, 61.0, -1.5, -30.0])  # sometimes backwards
        now[0] += step
        counter = rng.choice(["a", "b"])
        if rng.random() < 0.6:
            tokens = rng.randrange(0, 1000)
            await counters.add_usage("m", [counter], tokens, [], 0.0)
            second = int(now[0] * 1000 // 1000)
            reference[counter][second] = reference[counter].get(second, 0) + tokens
        assert counters._tokens(counter, now[0] * 1000) == reference_tokens(reference[counter], now[0] * 1000)
