"""Counter backends for `corral.gateway.limits`: in this process, or shared in Redis."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import deque
from typing import Any

from corral.gateway.limits import RESERVATION_TTL_MS, BudgetRule, Refusal, Rule, budget_retry_after

WINDOW_MS = 60_000
HELD_RETRY_AFTER = 1.0  # a budget held by calls in flight: they settle within their timeout


class _TokenWindow:
    """The tokens of one tpm counter per second, oldest first, and their running total
    (so a check costs what expired since the last one, not a pass over 60 buckets)."""

    __slots__ = ("seconds", "tokens", "total")

    def __init__(self) -> None:
        self.seconds: deque[int] = deque()
        self.tokens: deque[int] = deque()
        self.total = 0

    def add(self, second: int, tokens: int) -> None:
        seconds = self.seconds
        if seconds and seconds[-1] == second:
            self.tokens[-1] += tokens
        elif not seconds or seconds[-1] < second:
            seconds.append(second)
            self.tokens.append(tokens)
        else:  # the clock went back: keep the seconds in order
            i = bisect_left(seconds, second)
            if seconds[i] == second:
                self.tokens[i] += tokens
            else:
                seconds.insert(i, second)
                self.tokens.insert(i, tokens)
        self.total += tokens

    def trim(self, floor: int) -> None:
        seconds = self.seconds
        while seconds and seconds[0] < floor:
            seconds.popleft()
            self.total -= self.tokens.popleft()


class MemoryCounters:
    """One process's counters. Memory is bounded by the number of live keys and models:
    each rpm log holds at most ``limit`` timestamps, each tpm window at most 60 buckets,
    and counters untouched for a window are swept away."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self._clock = clock
        self._logs: dict[str, deque[float]] = {}
        self._windows: dict[str, _TokenWindow] = {}
        self._spend: dict[str, tuple[float, float]] = {}  # counter -> (amount, expires at)
        self._held: dict[str, dict[str, tuple[float, float]]] = {}  # counter -> member -> (USD, expires at)
        self._calls = 0

    def _now_ms(self) -> float:
        return float(self._clock()) * 1000

    async def admit(
        self, member: str, rpm: list[Rule], tpm: list[Rule], budgets: list[BudgetRule], reserve: float = 0.0
    ) -> Refusal | None:
        now = self._now_ms()
        self._calls += 1
        if self._calls % 1000 == 0:
            self._sweep(now)
        for rule in rpm:
            log = self._logs.get(rule.counter)
            if log is None:
                log = self._logs[rule.counter] = deque()
            while log and log[0] <= now - WINDOW_MS:
                log.popleft()
            if len(log) >= rule.limit:
                return Refusal(rule.which, (log[0] + WINDOW_MS - now) / 1000)
        for rule in tpm:
            total, oldest = self._tokens(rule.counter, now)
            if total >= rule.limit:
                return Refusal(rule.which, (oldest + 60) - now / 1000 if oldest is not None else 1.0)
        for budget in budgets:
            amount, expires = self._spend.get(budget.counter, (0.0, 0.0))
            if expires <= now:
                return Refusal(budget.which, None, missing=budget)
            if amount >= budget.max_budget:
                return Refusal(budget.which, budget_retry_after(budget))
            if amount + self._held_total(budget.counter, now) >= budget.max_budget:
                return Refusal(budget.which, HELD_RETRY_AFTER)
        for rule in rpm:
            self._logs[rule.counter].append(now)
        if reserve > 0:
            for budget in budgets:
                self._held.setdefault(budget.counter, {})[member] = (reserve, now + RESERVATION_TTL_MS)
        return None

    def _held_total(self, counter: str, now: float) -> float:
        held = self._held.get(counter)
        if not held:
            return 0.0
        for member in [m for m, (_, expires) in held.items() if expires <= now]:
            del held[member]
        return sum(amount for amount, _ in held.values())

    def _tokens(self, counter: str, now: float) -> tuple[int, int | None]:
        window = self._windows.get(counter)
        if window is None:
            return 0, None
        window.trim(int(now // 1000) - 59)
        return window.total, window.seconds[0] if window.seconds else None

    def _spent(self, counter: str, now: float) -> float:
        amount, expires = self._spend.get(counter, (0.0, 0.0))
        return amount if expires > now else 0.0

    async def add_usage(self, member: str, tpm_counters: list[str], tokens: int, budgets: list[BudgetRule],
                        cost: float) -> list[float]:
        now = self._now_ms()
        second = int(now // 1000)
        for counter in tpm_counters:
            window = self._windows.get(counter)
            if window is None:
                window = self._windows[counter] = _TokenWindow()
            window.add(second, tokens)
        after: list[float] = []
        for budget in budgets:
            held = self._held.get(budget.counter)
            if held is not None:
                held.pop(member, None)
            amount, expires = self._spend.get(budget.counter, (0.0, 0.0))
            if cost <= 0 or expires <= now:  # a missing counter is seeded at the next admission
                after.append(math.nan)
                continue
            self._spend[budget.counter] = (amount + cost, now + budget.ttl_seconds * 1000)
            after.append(amount + cost)
        return after

    async def seed_spend(self, rule: BudgetRule, amount: float) -> None:
        now = self._now_ms()
        if self._spend.get(rule.counter, (0.0, 0.0))[1] <= now:
            self._spend[rule.counter] = (amount, now + rule.ttl_seconds * 1000)

    async def spend(self, rule: BudgetRule) -> float:
        return self._spent(rule.counter, self._now_ms())

    async def has_spend(self, rule: BudgetRule) -> bool:
        return self._spend.get(rule.counter, (0.0, 0.0))[1] > self._now_ms()

    def _sweep(self, now: float) -> None:
        for counter in [c for c, log in self._logs.items() if not log or log[-1] <= now - WINDOW_MS]:
            del self._logs[counter]
        floor = int(now // 1000) - 59
        for counter in [c for c, w in self._windows.items() if not w.seconds or w.seconds[-1] < floor]:
            del self._windows[counter]
        for counter in [c for c, (_, expires) in self._spend.items() if expires <= now]:
            del self._spend[counter]
        for counter in [c for c in self._held if not self._held_total(c, now)]:
            del self._held[counter]

    async def aclose(self) -> None:
        return None


# KEYS: rpm logs, tpm bucket hashes, then per budget: its spend counter, the hash of the
# USD held by calls in flight (member -> amount) and their expiry times (a sorted set)
# ARGV: member, n_rpm, n_tpm, n_budget, rpm limits..., tpm limits..., max budgets..., reserve, held ttl ms
# Returns {0, 0} when admitted, else {index of the failing rule (1-based), retry after ms};
# for a budget the second value is -1 (spent), -2 (held by calls in flight) or -3 (its
# counter is missing: seed it from the stored usage and ask again).
# Time comes from the Redis server so every replica shares one clock.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local n_rpm, n_tpm, n_budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, n_rpm do
  local key = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 60000)
  if redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {i, tonumber(oldest[2]) + 60000 - now}
  end
end
local floor = math.floor(now / 1000) - 59
for j = 1, n_tpm do
  local key = KEYS[n_rpm + j]
  local fields = redis.call('HGETALL', key)
  local total, oldest = 0, nil
  for k = 1, #fields, 2 do
    local second = tonumber(fields[k])
    if second < floor then
      redis.call('HDEL', key, fields[k])
    else
      total = total + tonumber(fields[k + 1])
      if oldest == nil or second < oldest then oldest = second end
    end
  end
  if total >= tonumber(ARGV[4 + n_rpm + j]) then
    return {n_rpm + j, (oldest + 60) * 1000 - now}
  end
end
local first = n_rpm + n_tpm
for b = 1, n_budget do
  local base = first + 3 * (b - 1)
  local raw = redis.call('GET', KEYS[base + 1])
  if not raw then
    return {first + b, -3}
  end
  local spent, max = tonumber(raw), tonumber(ARGV[4 + first + b])
  if spent >= max then
    return {first + b, -1}
  end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[base + 3], '-inf', now)
  for k = 1, #expired do
    redis.call('HDEL', KEYS[base + 2], expired[k])
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[base + 3], '-inf', now)
  end
  local held = 0
  local amounts = redis.call('HVALS', KEYS[base + 2])
  for k = 1, #amounts do
    held = held + tonumber(amounts[k])
  end
  if spent + held >= max then
    return {first + b, -2}
  end
end
for i = 1, n_rpm do
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], 60000)
end
local reserve = ARGV[5 + first + n_budget]
if tonumber(reserve) > 0 then
  local ttl = tonumber(ARGV[6 + first + n_budget])
  for b = 1, n_budget do
    local base = first + 3 * (b - 1)
    redis.call('HSET', KEYS[base + 2], member, reserve)
    redis.call('ZADD', KEYS[base + 3], now + ttl, member)
    redis.call('PEXPIRE', KEYS[base + 2], ttl)
    redis.call('PEXPIRE', KEYS[base + 3], ttl)
  end
end
return {0, 0}
"""

# KEYS: tpm bucket hashes, then per budget: spend counter, held hash, held expiries
# ARGV: tokens, n_tpm, cost, member, budget ttls (seconds)...
# Returns each budget's spend after ('' when its counter is missing: the next admission
# seeds it from the stored usage, which this call's row is part of by then or soon after).
_ADD_USAGE = """
local t = redis.call('TIME')
local second = tostring(tonumber(t[1]))
local n_tpm = tonumber(ARGV[2])
for i = 1, n_tpm do
  redis.call('HINCRBY', KEYS[i], second, ARGV[1])
  redis.call('EXPIRE', KEYS[i], 61)
end
local out = {}
local n_budget = (#KEYS - n_tpm) / 3
local spend = tonumber(ARGV[3]) > 0
for b = 1, n_budget do
  local base = n_tpm + 3 * (b - 1)
  redis.call('HDEL', KEYS[base + 2], ARGV[4])
  redis.call('ZREM', KEYS[base + 3], ARGV[4])
  if spend and redis.call('EXISTS', KEYS[base + 1]) == 1 then
    out[b] = redis.call('INCRBYFLOAT', KEYS[base + 1], ARGV[3])
    redis.call('EXPIRE', KEYS[base + 1], tonumber(ARGV[4 + b]))
  else
    out[b] = ''
  end
end
return out
"""


class RedisCounters:
    """Counters shared by every replica through one Redis. A Redis error refuses the
    request loudly (the caller sees a 503) instead of silently falling back to
    per-process limits, which would multiply every limit by the number of replicas."""

    def __init__(self, client: Any, *, prefix: str = "corral:") -> None:
        self.client = client
        self.prefix = prefix
        self._admit = client.register_script(_ADMIT)
        self._add_usage = client.register_script(_ADD_USAGE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "corral:") -> RedisCounters:
        import redis.asyncio as aioredis

        return cls(aioredis.from_url(url), prefix=prefix)

    def _k(self, counter: str) -> str:
        return f"{self.prefix}limits:{counter}"

    def _budget_keys(self, budgets: list[BudgetRule]) -> list[str]:
        keys: list[str] = []
        for b in budgets:
            counter = self._k(b.counter)
            keys += [counter, f"{counter}:held", f"{counter}:held-until"]
        return keys

    async def admit(
        self, member: str, rpm: list[Rule], tpm: list[Rule], budgets: list[BudgetRule], reserve: float = 0.0
    ) -> Refusal | None:
        keys = [self._k(r.counter) for r in [*rpm, *tpm]] + self._budget_keys(budgets)
        args: list[Any] = [member, len(rpm), len(tpm), len(budgets), *(r.limit for r in [*rpm, *tpm])]
        args.extend(repr(float(b.max_budget)) for b in budgets)
        args += [repr(float(reserve)), RESERVATION_TTL_MS]
        index, retry_ms = (int(v) for v in await self._admit(keys=keys, args=args))
        if index == 0:
            return None
        if index > len(rpm) + len(tpm):
            budget = budgets[index - len(rpm) - len(tpm) - 1]
            if retry_ms == -3:
                return Refusal(budget.which, None, missing=budget)
            if retry_ms == -2:
                return Refusal(budget.which, HELD_RETRY_AFTER)
            return Refusal(budget.which, budget_retry_after(budget))
        return Refusal([*rpm, *tpm][index - 1].which, max(retry_ms, 0) / 1000)

    async def add_usage(self, member: str, tpm_counters: list[str], tokens: int, budgets: list[BudgetRule],
                        cost: float) -> list[float]:
        """One round trip for the tokens and the cost of a call."""
        keys = [self._k(c) for c in tpm_counters] + self._budget_keys(budgets)
        args: list[Any] = [tokens, len(tpm_counters), repr(float(cost)), member, *(b.ttl_seconds for b in budgets)]
        after = await self._add_usage(keys=keys, args=args)
        return [float(v) if v not in (b"", "", None) else math.nan for v in after]

    async def seed_spend(self, rule: BudgetRule, amount: float) -> None:
        await self.client.set(self._k(rule.counter), repr(float(amount)), nx=True, ex=rule.ttl_seconds)

    async def spend(self, rule: BudgetRule) -> float:
        value = await self.client.get(self._k(rule.counter))
        return float(value) if value is not None else 0.0

    async def has_spend(self, rule: BudgetRule) -> bool:
        return bool(await self.client.exists(self._k(rule.counter)))

    async def aclose(self) -> None:
        await self.client.aclose()
