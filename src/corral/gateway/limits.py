"""Rate limits (rpm, tpm) and budgets, per key (or JWT subject), per key-and-model, per
team and per model.

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
  30d, 1w), periods counted from the key's (team's) creation, or from the Unix epoch for
  a JWT subject, which has no creation time. A request is refused once the spend of the
  current period is >= ``max_budget``; the counter is incremented the moment a call's
  cost is known, so every replica refuses the next request.

Each scope a caller counts against is a `Quota`: its virtual key, its JWT subject (with
the ``auth.jwt.limits`` of the config) and its team (a team record, or for a JWT team
with no record, ``auth.jwt.team_limits``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from corral.config.schema import CallerLimits
from corral.gateway.auth import Principal
from corral.gateway.errors import ApiError
from corral.ids import new_id
from corral.llm.types import Usage
from corral.store import KeyRecord, TeamRecord

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid duration {text!r}: use a number and s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Scope = Literal["key", "subject", "team"]


@dataclass(slots=True)  # not frozen: built per request, and a frozen __init__ costs microseconds
class Quota:
    """The limits of one scope a call counts against: a key, a JWT subject or a team."""

    scope: Scope
    id: str
    rpm: int | None = None
    tpm: int | None = None
    model_limits: Mapping[str, Mapping[str, int | None]] = field(default_factory=dict)
    max_budget: float | None = None
    budget_duration: str | None = None
    created_at: datetime = EPOCH  # budget periods count from here

    @classmethod
    def of(cls, owner: KeyRecord | TeamRecord | Quota) -> Quota:
        if isinstance(owner, Quota):
            return owner
        if isinstance(owner, TeamRecord):
            return cls("team", owner.id, max_budget=owner.max_budget, budget_duration=owner.budget_duration,
                       created_at=owner.created_at)
        return cls("key", owner.id, owner.rpm, owner.tpm, owner.model_limits, owner.max_budget,
                   owner.budget_duration, owner.created_at)

    @classmethod
    def configured(cls, scope: Scope, id: str, limits: CallerLimits) -> Quota:
        per_model = {m: {"rpm": v.rpm, "tpm": v.tpm} for m, v in limits.model_limits.items()}
        return cls(scope, id, limits.rpm, limits.tpm, per_model, limits.max_budget, limits.budget_duration)


@dataclass(frozen=True, slots=True)
class BudgetWindow:
    index: int
    start: datetime
    end: datetime | None  # None: a lifetime budget


def budget_window(owner: KeyRecord | TeamRecord | Quota, now: datetime | None = None) -> BudgetWindow:
    """The current budget period of a key, team or subject; periods count from its creation."""
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


BUDGETS = ("budget", "team_budget", "subject_budget")
_BUDGET_WHICH = {"key": "budget", "team": "team_budget", "subject": "subject_budget"}


@dataclass(frozen=True, slots=True)
class BudgetRule:
    which: str  # "budget" (the key's), "team_budget" or "subject_budget"
    counter: str
    max_budget: float
    ttl_seconds: int
    window: BudgetWindow
    owner: str = ""  # the key id, team id or subject


@dataclass(slots=True)
class Reservation:
    id: str
    model: str
    principal: Principal
    tpm_counters: list[str] = field(default_factory=list)
    budgets: list[BudgetRule] = field(default_factory=list)
    reserved: float = 0.0  # USD held against each of its budgets until the call is settled
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    which: str
    retry_after: float | None
    missing: BudgetRule | None = None  # not a refusal: this budget's counter must be seeded first


@dataclass(frozen=True, slots=True)
class Crossing:
    """A call's cost took a budget's spend from ``before`` to ``after`` (for alerts)."""

    budget: BudgetRule
    before: float
    after: float


StoredSpend = Callable[[BudgetRule], Awaitable[float]]  # a budget period's spend in the usage rows
RESERVATION_TTL_MS = 600_000  # a reservation a crashed process never settled expires after this


class Counters(Protocol):
    async def admit(
        self, member: str, rpm: list[Rule], tpm: list[Rule], budgets: list[BudgetRule], reserve: float = 0.0
    ) -> Refusal | None:
        """Check every rule; if all pass, take one rpm slot in each rpm rule and hold
        ``reserve`` USD against each budget (atomically). A budget whose counter does not
        exist is not checked: a `Refusal` with ``missing`` asks for it to be seeded."""

    async def add_usage(self, member: str, tpm_counters: list[str], tokens: int, budgets: list[BudgetRule],
                        cost: float) -> list[float]:
        """Add a finished call's tokens to its tpm windows and its cost to its budget
        periods, releasing what ``member`` held; returns each budget's spend after."""

    async def seed_spend(self, rule: BudgetRule, amount: float) -> None:
        """Set the period's spend unless a counter already exists (the counter wins)."""

    async def spend(self, rule: BudgetRule) -> float: ...

    async def has_spend(self, rule: BudgetRule) -> bool:
        """Whether the period's counter exists (then seeding it from the database is moot)."""

    async def aclose(self) -> None: ...


ModelLimits = Mapping[str, tuple[int | None, int | None]]  # alias -> (rpm, tpm)
PLANS_MAX = 10_000


@dataclass(slots=True)
class Plan:
    """The rules of one caller's calls on one model, derived from its (immutable) key and
    team records and the config; budget windows make it valid only until ``until``."""

    key: KeyRecord | None
    team: TeamRecord | None
    rpm: list[Rule]
    tpm: list[Rule]
    budgets: list[BudgetRule]
    until: float  # Unix time the first of its budget periods ends (inf: none ends)


class Limiter:
    def __init__(
        self,
        counters: Counters,
        *,
        stored_spend: StoredSpend | None = None,
        model_limits: ModelLimits | None = None,
        subject_limits: CallerLimits | None = None,
        team_limits: CallerLimits | None = None,
    ) -> None:
        self.counters = counters
        self.stored_spend = stored_spend  # None: a missing budget counter starts at 0 (tests)
        self.rejections: dict[str, int] = {}
        self.configure(model_limits=model_limits, subject_limits=subject_limits, team_limits=team_limits)

    def configure(self, *, model_limits: ModelLimits | None = None, subject_limits: CallerLimits | None = None,
                  team_limits: CallerLimits | None = None) -> None:
        """The limits of a (re)loaded config; the counters, and what they counted, stay."""
        self.model_limits = dict(model_limits or {})
        self.subject_limits = subject_limits or CallerLimits()
        self.team_limits = team_limits or CallerLimits()
        self._plans: dict[tuple[str | None, ...], Plan] = {}

    def quotas(self, principal: Principal) -> list[Quota]:
        """Every scope the principal's calls count against."""
        quotas = [Quota.of(principal.key)] if principal.key is not None else []
        if principal.kind != "jwt":
            return quotas + ([Quota.of(principal.team)] if principal.team is not None else [])
        quotas.append(Quota.configured("subject", principal.subject, self.subject_limits))
        if principal.team_id is not None:
            team = Quota.configured("team", principal.team_id, self.team_limits)
            record = principal.team
            if record is not None and record.max_budget is not None:  # a team record's own budget wins
                team = Quota("team", record.id, team.rpm, team.tpm, team.model_limits, record.max_budget,
                             record.budget_duration, record.created_at)
            quotas.append(team)
        return quotas

    def _rules(self, quotas: list[Quota], model: str) -> tuple[list[Rule], list[Rule]]:
        rpm: list[Rule] = []
        tpm: list[Rule] = []
        for quota in quotas:
            scope, owner = quota.scope, quota.id
            if quota.rpm:
                rpm.append(Rule(f"{scope}_rpm", f"rpm:{scope}:{owner}", quota.rpm))
            if quota.tpm:
                tpm.append(Rule(f"{scope}_tpm", f"tpm:{scope}:{owner}", quota.tpm))
            per_model = quota.model_limits.get(model, {})
            if per_model.get("rpm"):
                rpm.append(Rule(f"{scope}_model_rpm", f"rpm:{scope}model:{owner}:{model}", int(per_model["rpm"] or 0)))
            if per_model.get("tpm"):
                tpm.append(Rule(f"{scope}_model_tpm", f"tpm:{scope}model:{owner}:{model}", int(per_model["tpm"] or 0)))
        model_rpm, model_tpm = self.model_limits.get(model, (None, None))
        if model_rpm:
            rpm.append(Rule("model_rpm", f"rpm:model:{model}", model_rpm))
        if model_tpm:
            tpm.append(Rule("model_tpm", f"tpm:model:{model}", model_tpm))
        return rpm, tpm

    @staticmethod
    def budget_rule(owner: KeyRecord | TeamRecord | Quota | None, now: datetime | None = None) -> BudgetRule | None:
        if owner is None or owner.max_budget is None:
            return None
        quota = Quota.of(owner)
        window = budget_window(quota, now)
        ttl = int((window.end - window.start).total_seconds()) + 3600 if window.end else 400 * 86400
        return BudgetRule(_BUDGET_WHICH[quota.scope], f"spend:{quota.scope}:{quota.id}:{window.index}",
                          owner.max_budget, ttl, window, quota.id)

    def budget_rules(self, principal: Principal, quotas: list[Quota] | None = None) -> list[BudgetRule]:
        rules = [self.budget_rule(q) for q in (self.quotas(principal) if quotas is None else quotas)]
        return [r for r in rules if r is not None]

    def plan(self, principal: Principal, model: str) -> Plan:
        """The rules of the principal's call on `model`, built once per key (team, JWT
        subject) and model: a changed key or team is a new record, so a new plan."""
        key, team = principal.key, principal.team
        if principal.kind == "jwt":
            cache_key: tuple[str | None, ...] = ("jwt", principal.subject, principal.team_id, model)
        else:
            cache_key = (key.id if key is not None else None, team.id if team is not None else None, model)
        plan = self._plans.get(cache_key)
        if plan is not None and plan.key is key and plan.team is team and time.time() < plan.until:
            return plan
        quotas = self.quotas(principal)
        rpm, tpm = self._rules(quotas, model)
        budgets = self.budget_rules(principal, quotas)
        ends = [b.window.end.timestamp() for b in budgets if b.window.end is not None]
        plan = Plan(key, team, rpm, tpm, budgets, min(ends, default=math.inf))
        if len(self._plans) >= PLANS_MAX:
            self._plans.clear()
        self._plans[cache_key] = plan
        return plan

    async def check(self, principal: Principal, model: str, max_cost: float = 0.0) -> Reservation:
        """Admit a call that may cost up to ``max_cost``: that much is held against each of
        the caller's budgets until `record` settles it, so concurrent calls cannot all
        start under a budget they overrun together."""
        plan = self.plan(principal, model)
        rpm, tpm, budgets = plan.rpm, plan.tpm, plan.budgets
        reserve = max_cost if budgets else 0.0
        reservation = Reservation(new_id(), model, principal, [r.counter for r in tpm], list(budgets), reserve)
        if not rpm and not tpm and not budgets:
            return reservation
        refusal = await self.counters.admit(reservation.id, rpm, tpm, budgets, reserve)
        for _ in range(len(budgets)):  # a lost counter (Redis restarted, evicted) is rebuilt first
            if refusal is None or refusal.missing is None:
                break
            await self.counters.seed_spend(refusal.missing, await self._stored(refusal.missing))
            refusal = await self.counters.admit(reservation.id, rpm, tpm, budgets, reserve)
        if refusal is not None:
            self.rejections[refusal.which] = self.rejections.get(refusal.which, 0) + 1
            raise _exceeded(refusal, rpm + tpm, budgets, principal)
        return reservation

    def charges(self, principal: Principal, model: str, upstream_alias: str | None = None) -> Reservation:
        """The counters a call made on the principal's behalf adds its tokens and cost to,
        without admitting it (no rpm slot): an agent run's model calls, charged to the
        caller who started the run (``model``, the agent) and to ``upstream_alias``'s tpm."""
        quotas = self.quotas(principal)
        _, tpm = self._rules(quotas, model)
        counters = [r.counter for r in tpm]
        model_tpm = self.model_limits.get(upstream_alias, (None, None))[1] if upstream_alias else None
        if model_tpm and upstream_alias != model:
            counters.append(f"tpm:model:{upstream_alias}")
        return Reservation(new_id(), model, principal, counters, self.budget_rules(principal, quotas))

    async def _stored(self, rule: BudgetRule) -> float:
        return await self.stored_spend(rule) if self.stored_spend is not None else 0.0

    async def record(self, reservation: Reservation, usage: Usage | None, cost_usd: float) -> list[Crossing]:
        """Settle a call: its tokens and cost counted, what it held released. Returns the
        budgets its cost moved (before and after), for alerts."""
        if reservation.settled:
            return []
        reservation.settled = True
        tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        counters = reservation.tpm_counters if tokens > 0 else []
        budgets = reservation.budgets if cost_usd > 0 or reservation.reserved > 0 else []
        if not counters and not budgets:
            return []
        after = await self.counters.add_usage(reservation.id, counters, tokens, budgets, cost_usd)
        if cost_usd <= 0:
            return []
        return [Crossing(b, spent - cost_usd, spent) for b, spent in zip(budgets, after, strict=False)
                if not math.isnan(spent)]

    async def release(self, reservation: Reservation) -> None:
        """A call that costs nothing here (an agent run, charged per model call)."""
        await self.record(reservation, None, 0.0)

    async def seed_budget(self, owner: KeyRecord | TeamRecord | Quota, spent: float) -> None:
        rule = self.budget_rule(owner)
        if rule is not None:
            await self.counters.seed_spend(rule, spent)

    async def needs_seed(self, owner: KeyRecord | TeamRecord | Quota) -> bool:
        rule = self.budget_rule(owner)
        return rule is not None and not await self.counters.has_spend(rule)

    async def spend(self, owner: KeyRecord | TeamRecord | Quota) -> float | None:
        rule = self.budget_rule(owner)
        return None if rule is None else await self.counters.spend(rule)

    async def aclose(self) -> None:
        await self.counters.aclose()


_RATE_SCOPES = {"key": "this key", "key_model": "this key on this model", "model": "this model",
                "subject": "this caller", "subject_model": "this caller on this model",
                "team": "this caller's team", "team_model": "this caller's team on this model"}


def _exceeded(refusal: Refusal, rules: list[Rule], budgets: list[BudgetRule], principal: Principal) -> LimitExceeded:
    if refusal.which in BUDGETS:
        budget = next(b for b in budgets if b.which == refusal.which)
        until = f"; it resets at {budget.window.end.isoformat()}" if budget.window.end else ""
        owner = {"budget": "this key", "subject_budget": "this caller",
                 "team_budget": "this key's team" if principal.kind == "key" else "this caller's team"}[budget.which]
        message = f"Budget exceeded: the budget of {owner} is ${budget.max_budget:g}{until}"
        return LimitExceeded(budget.which, refusal.retry_after, message)
    rule = next(r for r in rules if r.which == refusal.which)
    unit = "requests" if rule.which.endswith("rpm") else "tokens"
    scope = _RATE_SCOPES[rule.which.rsplit("_", 1)[0]]
    message = f"Rate limit exceeded: {rule.limit} {unit} per minute for {scope}"
    return LimitExceeded(rule.which, refusal.retry_after, message)


def budget_retry_after(budget: BudgetRule) -> float | None:
    if budget.window.end is None:
        return None
    return max(1.0, (budget.window.end - datetime.now(UTC)).total_seconds())


def now_ms() -> float:
    return time.time() * 1000
