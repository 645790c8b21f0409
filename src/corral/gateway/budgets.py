"""Budget counters seeded from the stored usage.

A budget counter lives in this process or in Redis; when it is missing (a new period, a
restart without Redis, Redis emptied or evicting) it is seeded from the usage rows of
the current period before it is trusted: the admission that finds it missing seeds it
(`StoredSpend`) and is checked again. Keys and teams are seeded at start and on every key-cache
refresh; a JWT subject (or its team) has no row to seed at start, so the first call of
each period in this process seeds it.
"""

from __future__ import annotations

import logging

from corral.gateway.auth import Principal
from corral.gateway.limits import BudgetRule, Crossing, Limiter
from corral.store import KeyRecord, Store
from corral.telemetry.alerts import Alerter

log = logging.getLogger("corral.budgets")

SEEDED_MAX = 100_000


class StoredSpend:
    """A budget period's spend in the usage rows: what a missing counter is seeded with
    (`Limiter.check` asks for it when the counter is gone)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, rule: BudgetRule) -> float:
        usage, since = self.store.usage, rule.window.start
        if rule.which == "subject_budget":
            return await usage.total_cost(subject=rule.owner, since=since)
        if rule.which == "team_budget":
            return await usage.total_cost(team_id=rule.owner, since=since)
        return await usage.total_cost(rule.owner, since=since)


class BudgetSeeder:
    def __init__(self, limiter: Limiter, store: Store) -> None:
        self.limiter = limiter
        self.store = store
        # Budget counters of JWT subjects and teams this process has seeded (cleared every refresh).
        self._seeded: set[str] = set()

    async def seed_all(self) -> None:
        """Every key's and team's counter that is missing (only those cost a query)."""
        self._seeded.clear()
        for key in await self.store.keys.list():
            if await self.limiter.needs_seed(key):
                rule = self.limiter.budget_rule(key)
                assert rule is not None
                await self.limiter.seed_budget(key, await self.store.usage.total_cost(key.id, since=rule.window.start))
        for team in await self.store.teams.list():
            if await self.limiter.needs_seed(team):
                rule = self.limiter.budget_rule(team)
                assert rule is not None
                spent = await self.store.usage.total_cost(team_id=team.id, since=rule.window.start)
                await self.limiter.seed_budget(team, spent)

    async def seed_key(self, record: KeyRecord) -> None:
        """A key whose budget or period just changed may count in a counter that does not
        exist yet: seed it from the stored usage now rather than at the next refresh."""
        rule = self.limiter.budget_rule(record)
        if rule is not None and not await self.limiter.counters.has_spend(rule):
            spent = await self.store.usage.total_cost(record.id, since=rule.window.start)
            await self.limiter.counters.seed_spend(rule, spent)

    async def seed_caller(self, principal: Principal, model: str) -> None:
        """A JWT subject's (and team's) counters, on its first call of a period here."""
        for rule in self.limiter.plan(principal, model).budgets:
            if rule.counter in self._seeded or rule.which == "budget":
                continue
            if len(self._seeded) >= SEEDED_MAX:
                self._seeded.clear()
            self._seeded.add(rule.counter)
            try:
                if not await self.limiter.counters.has_spend(rule):
                    await self.limiter.counters.seed_spend(rule, await StoredSpend(self.store)(rule))
            except Exception as exc:  # the check that follows reports a counters outage
                self._seeded.discard(rule.counter)
                log.warning("could not seed the budget counter of %s: %s", rule.which, exc)


class BudgetAlerts:
    """An alert when a call's cost takes a budget across a threshold (a share of its
    ``max_budget``), sent to the alert routes (`corral.telemetry.alerts`).

    Once per threshold and budget period: the counters add each call's cost atomically
    and return the spend after it, so exactly one call, on one replica, sees the spend go
    from under a threshold to at or over it."""

    def __init__(self, alerter: Alerter, thresholds: list[float]) -> None:
        self.alerter = alerter
        self.thresholds = sorted(thresholds)
        self.sent = 0

    def crossed(self, crossings: list[Crossing]) -> None:
        for crossing in crossings:
            budget = crossing.budget
            for percent in self.thresholds:
                level = budget.max_budget * percent / 100
                if crossing.before < level <= crossing.after:
                    self._send(budget, percent, crossing.after)

    def _send(self, budget: BudgetRule, percent: float, spend: float) -> None:
        scope = _SCOPES.get(budget.which, budget.which)
        self.sent += 1
        log.warning("budget alert: %s %s reached %g%% of $%g", scope, budget.owner, percent, budget.max_budget)
        self.alerter.notify({
            "type": "budget.threshold",
            "scope": scope,
            "owner": budget.owner,
            "data": {
                "threshold_percent": percent,
                "spend_usd": round(spend, 6),
                "max_budget_usd": budget.max_budget,
                "period_start": budget.window.start.isoformat(),
                "period_end": budget.window.end.isoformat() if budget.window.end else None,
            },
        })

    def start(self) -> None:
        self.alerter.start()

    async def stop(self) -> None:
        await self.alerter.stop()


_SCOPES = {"budget": "key", "team_budget": "team", "subject_budget": "subject"}
