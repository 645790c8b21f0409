"""Rate limits (rpm, tpm) and budgets, per key, per key-and-model and per model.

`await limiter.check(principal, model)` runs before the upstream call and returns a
`Reservation` or raises `LimitExceeded`; `await limiter.record(reservation, usage,
cost)` runs after it. The counters live in this process (`MemoryCounters`) or, with
``cache.url: redis://...``, in Redis (`RedisCounters`), where one Lua script checks
every limit of a request and takes its slot atomically, so N replicas share one limit.

Windows:
- rpm is a sliding window log: the request timestamps of the last 60 s (a sorted set
  in Redis). At most ``rpm`` requests start in any 60-second interval.
- tpm is a sliding window of 60 one-second buckets of tokens. Tokens are known only
  after the call, so a request is refused once the tokens of the last minute reach the
  limit (a request that starts under the limit may take it over).
- A budget is a spend counter per budget period (``budget_duration``: 30s, 15m, 1h, 1d,
  30d, 1w), periods counted from the key's creation. A request is refused once the
  spend of the current period is >= ``max_budget``; the counter is incremented the
  moment a call's cost is known, so every replica refuses the next request.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from corral.gateway.auth import Principal
from corral.gateway.errors import ApiError
from corral.llm.types import Usage
from corral.store import KeyRecord, TeamRecord

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid duration {text!r}: use a number and s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class BudgetWindow:
    index: int
    start: datetime
    end: datetime | None  # None: a lifetime budget


def budget_window(owner: KeyRecord | TeamRecord, now: datetime | None = None) -> BudgetWindow:
    """The current budget period of a key or team; periods count from its creation."""
    if not owner.budget_duration:
        return BudgetWindow(0, owner.created_at, None)
    period = parse_duration(owner.budget_duration)
    elapsed = (now or datetime.now(UTC)) - owner.created_at
    index = max(0, math.floor(elapsed / period))
    start = owner.created_at + index * period
    return BudgetWindow(index, start, start + period)


class LimitExceeded(ApiError):
    def __init__(self, which: str, retry_after: float | None, message: str) -> None:
        self.which = which
        self.retry_after = retry_after
        headers = {"retry-after": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
        if which in BUDGETS:
            super().__init__(402, message, code="budget_exceeded", type="insufficient_quota", headers=headers)
        else:
            super().__init__(429, message, code="rate_limit_exceeded", headers=headers)


@dataclass(frozen=True, slots=True)
class Rule:
    which: str  # "key_rpm", "key_model_tpm", "model_rpm", ...
    counter: str
    limit: int


BUDGETS = ("budget", "team_budget")


@dataclass(frozen=True, slots=True)
class BudgetRule:
    which: str  # "budget" (the key's) or "team_budget"
    counter: str
    max_budget: float
    ttl_seconds: int
    window: BudgetWindow


@dataclass(slots=True)
class Reservation:
    id: str
    model: str
    principal: Principal
    tpm_counters: list[str] = field(default_factory=list)
    budgets: list[BudgetRule] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Refusal:
    which: str
    retry_after: float | None


class Counters(Protocol):
    async def admit(
        self, member: str, rpm: list[Rule], tpm: list[Rule], budgets: list[BudgetRule]
    ) -> Refusal | None:
        """Check every rule; if all pass, take one rpm slot in each rpm rule (atomically)."""

    async def add_usage(self, tpm_counters: list[str], tokens: int, budgets: list[BudgetRule], cost: float) -> None:
        """Add a finished call's tokens to its tpm windows and its cost to its budget periods."""

    async def seed_spend(self, rule: BudgetRule, amount: float) -> None:
        """Set the period's spend unless a counter already exists (the counter wins)."""

    async def spend(self, rule: BudgetRule) -> float: ...

    async def has_spend(self, rule: BudgetRule) -> bool:
        """Whether the period's counter exists (then seeding it from the database is moot)."""

    async def aclose(self) -> None: ...


ModelLimits = Mapping[str, tuple[int | None, int | None]]  # alias -> (rpm, tpm)


class Limiter:
    def __init__(self, counters: Counters, *, model_limits: ModelLimits | None = None) -> None:
        self.counters = counters
        self.model_limits = dict(model_limits or {})
        self.rejections: dict[str, int] = {}

    def _rules(self, principal: Principal, model: str) -> tuple[list[Rule], list[Rule]]:
        rpm: list[Rule] = []
        tpm: list[Rule] = []
        key = principal.key
        if key is not None:
            if key.rpm:
                rpm.append(Rule("key_rpm", f"rpm:key:{key.id}", key.rpm))
            if key.tpm:
                tpm.append(Rule("key_tpm", f"tpm:key:{key.id}", key.tpm))
            per_model = key.model_limits.get(model, {})
            if per_model.get("rpm"):
                rpm.append(Rule("key_model_rpm", f"rpm:keymodel:{key.id}:{model}", int(per_model["rpm"])))
            if per_model.get("tpm"):
                tpm.append(Rule("key_model_tpm", f"tpm:keymodel:{key.id}:{model}", int(per_model["tpm"])))
        model_rpm, model_tpm = self.model_limits.get(model, (None, None))
        if model_rpm:
            rpm.append(Rule("model_rpm", f"rpm:model:{model}", model_rpm))
        if model_tpm:
            tpm.append(Rule("model_tpm", f"tpm:model:{model}", model_tpm))
        return rpm, tpm

    @staticmethod
    def budget_rule(owner: KeyRecord | TeamRecord | None, now: datetime | None = None) -> BudgetRule | None:
        if owner is None or owner.max_budget is None:
            return None
        window = budget_window(owner, now)
        ttl = int((window.end - window.start).total_seconds()) + 3600 if window.end else 400 * 86400
        scope = "team" if isinstance(owner, TeamRecord) else "key"
        which = "team_budget" if scope == "team" else "budget"
        return BudgetRule(which, f"spend:{scope}:{owner.id}:{window.index}", owner.max_budget, ttl, window)

    def _budgets(self, principal: Principal) -> list[BudgetRule]:
        rules = [self.budget_rule(principal.key), self.budget_rule(principal.team)]
        return [r for r in rules if r is not None]

    async def check(self, principal: Principal, model: str) -> Reservation:
        rpm, tpm = self._rules(principal, model)
        budgets = self._budgets(principal)
        reservation = Reservation(uuid.uuid4().hex, model, principal, [r.counter for r in tpm], budgets)
        if not rpm and not tpm and not budgets:
            return reservation
        refusal = await self.counters.admit(reservation.id, rpm, tpm, budgets)
        if refusal is not None:
            self.rejections[refusal.which] = self.rejections.get(refusal.which, 0) + 1
            raise _exceeded(refusal, rpm + tpm, budgets)
        return reservation

    async def record(self, reservation: Reservation, usage: Usage | None, cost_usd: float) -> None:
        tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        counters = reservation.tpm_counters if tokens > 0 else []
        budgets = reservation.budgets if cost_usd > 0 else []
        if counters or budgets:
            await self.counters.add_usage(counters, tokens, budgets, cost_usd)

    async def seed_budget(self, owner: KeyRecord | TeamRecord, spent: float) -> None:
        rule = self.budget_rule(owner)
        if rule is not None:
            await self.counters.seed_spend(rule, spent)

    async def needs_seed(self, owner: KeyRecord | TeamRecord) -> bool:
        rule = self.budget_rule(owner)
        return rule is not None and not await self.counters.has_spend(rule)

    async def spend(self, owner: KeyRecord | TeamRecord) -> float | None:
        rule = self.budget_rule(owner)
        return None if rule is None else await self.counters.spend(rule)

    async def aclose(self) -> None:
        await self.counters.aclose()


def _exceeded(refusal: Refusal, rules: list[Rule], budgets: list[BudgetRule]) -> LimitExceeded:
    if refusal.which in BUDGETS:
        budget = next(b for b in budgets if b.which == refusal.which)
        until = f"; it resets at {budget.window.end.isoformat()}" if budget.window.end else ""
        owner = "this key's team" if budget.which == "team_budget" else "this key"
        message = f"Budget exceeded: the budget of {owner} is ${budget.max_budget:g}{until}"
        return LimitExceeded(budget.which, refusal.retry_after, message)
    rule = next(r for r in rules if r.which == refusal.which)
    unit = "requests" if rule.which.endswith("rpm") else "tokens"
    scope = {"key": "this key", "key_model": "this key on this model", "model": "this model"}[
        rule.which.rsplit("_", 1)[0]
    ]
    message = f"Rate limit exceeded: {rule.limit} {unit} per minute for {scope}"
    return LimitExceeded(rule.which, refusal.retry_after, message)


def budget_retry_after(budget: BudgetRule) -> float | None:
    if budget.window.end is None:
        return None
    return max(1.0, (budget.window.end - datetime.now(UTC)).total_seconds())


def now_ms() -> float:
    return time.time() * 1000
