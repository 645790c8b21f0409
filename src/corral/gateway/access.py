"""Auth, limits, budgets and usage recording, wired into every model call.

`install(gateway)` adds one interceptor: `admit` authenticates the caller, checks the
model is allowed and takes the rate-limit slot (no database read for a cached key);
`finish` adds the call's tokens and cost to the shared counters and queues its usage
row on the batch writer (no database write on the request path).

An agent run (on any surface: chat, REST, A2A, MCP, in the foreground or queued) is
charged per model call instead: the run keeps its caller (`caller_of`), and
`charge_run_call` gives each of its model calls a usage row and adds its tokens and cost
to the caller's counters, on whichever replica executes the run. The surface's own
record of the request is then only observed (metrics), not charged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from corral.gateway.auth import ANONYMOUS, Authenticator, KeyCache, Principal
from corral.gateway.counters import MemoryCounters, RedisCounters
from corral.gateway.errors import ApiError
from corral.gateway.limits import BudgetRule, Counters, Limiter, LimitExceeded, Reservation
from corral.gateway.state import CallRecord, Gateway
from corral.llm.pricing import PricingTable
from corral.llm.router import CallContext
from corral.llm.types import Usage
from corral.store import BatchWriter, KeyRecord, Store, UsageRecord
from corral.store.store import BatchRecord

log = logging.getLogger("corral.access")

REFRESH_SECONDS = 30.0
SEEDED_MAX = 100_000
# In a surface's CallContext.extra: the call was an agent run, whose model calls were charged.
METERED = "corral.metered"
_KINDS = frozenset({"anonymous", "master", "static", "key", "jwt"})


def caller_of(request: Request, model: str) -> dict[str, Any] | None:
    """Who a run started by this (admitted) request is charged to, as JSON kept with the run."""
    principal: Principal | None = getattr(request.state, "corral_principal", None)
    if principal is None:
        return None
    return {"kind": principal.kind, "subject": principal.subject, "key_id": principal.key_id,
            "team_id": principal.team_id, "model": model}


@dataclass
class Access:
    """The gateway component ``gateway.components["access"]``."""

    gateway: Gateway
    authenticator: Authenticator
    limiter: Limiter
    pricing: PricingTable
    redis: Any = None  # redis.asyncio client when cache.url is set
    store: Store | None = None
    keys: KeyCache | None = None
    writer: BatchWriter[BatchRecord] | None = None
    own_store: bool = False
    refresh_seconds: float = REFRESH_SECONDS
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Budget counters of JWT subjects and teams this process has seeded (cleared every refresh).
    _seeded: set[str] = field(default_factory=set)

    @property
    def channel(self) -> str:
        return f"{self.gateway.config.cache.prefix}keys"

    async def startup(self) -> None:
        config = self.gateway.config
        if config.server.workers > 1 and not config.cache.url:
            log.warning("limits and budgets are counted per worker process; set cache.url (Redis) to share them")
        store = self.gateway.components.get("store")
        if store is None:
            database = self.gateway.config.database
            store = await Store.open(database.url, pool_size=database.pool_size)
            self.gateway.components["store"] = store
            self.own_store = True
        self.store = store
        self.keys = KeyCache(store)
        self.authenticator.keys = self.keys
        await self.keys.load()
        await self._seed_budgets()
        self.writer = BatchWriter(store.write_batch)
        self.writer.start()
        self.gateway.components["batch_writer"] = self.writer
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._refresh_loop(), name="corral-key-refresh"))
        if self.redis is not None:
            self._tasks.append(loop.create_task(self._listen(), name="corral-key-invalidation"))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.writer is not None:
            await self.writer.aclose()
        await self.limiter.aclose()
        if self.authenticator.jwt is not None:
            await self.authenticator.jwt.aclose()
        if self.own_store and self.store is not None:
            await self.store.aclose()
            self.gateway.components.pop("store", None)

    # ---- the interceptor ----------------------------------------------------

    async def admit(self, request: Request, model: str, surface: str) -> None:
        principal = await self.authenticator.authenticate(request)
        self.authenticator.check_model(principal, model)
        if principal.kind == "jwt":
            await self._seed_caller(principal, model)
        try:
            reservation = await self.limiter.check(principal, model)
        except LimitExceeded as exc:
            self._count_rejection(exc.which)
            raise
        except ApiError:
            raise
        except Exception as exc:  # the shared counters are down: refuse rather than go unlimited
            log.error("limits backend failed: %s", exc)
            raise ApiError(503, "Rate limits cannot be checked right now", code="limits_unavailable") from None
        # The scope's state dict itself (what `request.state` wraps in an object per request).
        state = request.scope.setdefault("state", {})
        state["corral_principal"] = principal
        state["corral_reservation"] = reservation

    async def finish(self, request: Request, record: CallRecord) -> None:
        reservation: Reservation | None = request.scope.get("state", {}).get("corral_reservation")
        if reservation is None or record.ctx.extra.get(METERED):
            return
        status = "ok" if record.error is None and record.status < 400 else f"error:{record.status}"
        await self._charge(reservation, record.request_id, record.model, record.ctx, record.usage,
                           record.started, status)

    async def charge_run_call(self, alias: str, ctx: CallContext, usage: Usage, started: float) -> None:
        """One model call of an agent run: charged to the run's caller (``ctx.extra``)."""
        caller = ctx.extra.get("caller")
        caller = caller if isinstance(caller, Mapping) else None
        principal = self.principal_for(caller)
        named = str(caller.get("model") or alias) if caller else alias
        reservation = self.limiter.charges(principal, named, alias)
        # One row per model call: the run's request id (or the run's id) and a suffix of its own.
        base = ctx.request_id or str(ctx.extra.get("run_id") or "run")
        request_id = f"{base[:80]}:{uuid.uuid4().hex[:12]}"
        await self._charge(reservation, request_id, alias, ctx, usage, started, "ok")

    async def _charge(self, reservation: Reservation, request_id: str, model: str, ctx: CallContext,
                      usage: Usage | None, started: float, status: str) -> None:
        # Priced as the alias first, then the upstream id (docs/pricing.md), as the metrics are.
        cost = self.pricing.cost(usage, model, ctx.upstream_model) if usage is not None else 0.0
        if reservation.tpm_counters or reservation.budgets:  # else there is nothing to count
            try:
                await self.limiter.record(reservation, usage, cost)
            except Exception as exc:
                log.error("could not add usage to the limit counters: %s", exc)
        principal = reservation.principal
        row = UsageRecord(
            request_id=request_id,
            model=model,
            key_id=principal.key_id,
            team_id=principal.team_id,
            subject=principal.subject,
            provider=ctx.provider,
            deployment=f"{ctx.provider}/{ctx.upstream_model}" if ctx.provider else None,
            upstream_model=ctx.upstream_model,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            cost_usd=cost,
            latency_ms=(time.perf_counter() - started) * 1000,
            status=status,
        )
        if self.writer is not None:
            await self.writer.put(row)

    def principal_for(self, caller: Mapping[str, Any] | None) -> Principal:
        """The principal a run's caller (`caller_of`) stands for now: its key and team from
        the cache (a key revoked since then still gets its usage rows, not its counters)."""
        if not caller or caller.get("kind") not in _KINDS:
            return ANONYMOUS
        key_id = caller.get("key_id")
        key = self.keys.by_id(str(key_id)) if key_id and self.keys is not None else None
        team_id = caller.get("team_id")
        team = self.keys.team(str(team_id)) if team_id and self.keys is not None else None
        return Principal(kind=caller["kind"], subject=str(caller.get("subject") or caller["kind"]),
                         key_id=str(key_id) if key_id else None, team_id=str(team_id) if team_id else None,
                         key=key, team=team)

    def _count_rejection(self, which: str) -> None:
        metrics = self.gateway.components.get("metrics")
        if metrics is not None:
            scope, _, limit = which.rpartition("_") if which != "budget" else ("key", "", "budget")
            metrics.limit_rejections.labels(limit=limit, scope=scope).inc()

    # ---- key changes ----------------------------------------------------------

    async def key_changed(self, key_id: str) -> KeyRecord | None:
        """After an admin change: update this replica now, and tell the others."""
        assert self.keys is not None
        record = await self.keys.reload(key_id)
        if self.redis is not None:
            try:
                await self.redis.publish(self.channel, key_id)
            except Exception as exc:
                log.warning("could not publish key change (other replicas refresh within %.0fs): %s",
                            self.refresh_seconds, exc)
        return record

    async def seed_key_budget(self, record: KeyRecord) -> None:
        """A key whose budget or period just changed may count in a counter that does not
        exist yet: seed it from the stored usage now rather than at the next refresh."""
        rule = self.limiter.budget_rule(record)
        if rule is not None and self.store is not None and not await self.limiter.counters.has_spend(rule):
            spent = await self.store.usage.total_cost(record.id, since=rule.window.start)
            await self.limiter.counters.seed_spend(rule, spent)

    async def principal(self, request: Request) -> Principal:
        return await self.authenticator.authenticate(request)

    async def _seed_budgets(self) -> None:
        assert self.keys is not None and self.store is not None
        # Only a missing counter (new period, restart without Redis, Redis emptied) costs a query.
        for key in await self.store.keys.list():
            if await self.limiter.needs_seed(key):
                rule = self.limiter.budget_rule(key)
                assert rule is not None
                spent = await self.store.usage.total_cost(key.id, since=rule.window.start)
                await self.limiter.seed_budget(key, spent)
        for team in await self.store.teams.list():
            if await self.limiter.needs_seed(team):
                rule = self.limiter.budget_rule(team)
                assert rule is not None
                spent = await self.store.usage.total_cost(team_id=team.id, since=rule.window.start)
                await self.limiter.seed_budget(team, spent)

    async def _seed_caller(self, principal: Principal, model: str) -> None:
        """A JWT subject (or team) has no row to seed at start: the first call of each budget
        period in this process seeds its counter from the stored usage, if the counter is missing."""
        for rule in self.limiter.plan(principal, model).budgets:
            if rule.counter in self._seeded or rule.which == "budget":
                continue
            if len(self._seeded) >= SEEDED_MAX:
                self._seeded.clear()
            self._seeded.add(rule.counter)
            try:
                if not await self.limiter.counters.has_spend(rule):
                    await self.limiter.counters.seed_spend(rule, await self._stored_spend(rule))
            except Exception as exc:  # the check that follows reports a counters outage
                self._seeded.discard(rule.counter)
                log.warning("could not seed the budget counter of %s: %s", rule.which, exc)

    async def _stored_spend(self, rule: BudgetRule) -> float:
        assert self.store is not None
        usage, since = self.store.usage, rule.window.start
        if rule.which == "subject_budget":
            return await usage.total_cost(subject=rule.owner, since=since)
        if rule.which == "team_budget":
            return await usage.total_cost(team_id=rule.owner, since=since)
        return await usage.total_cost(rule.owner, since=since)

    async def _refresh_loop(self) -> None:
        assert self.keys is not None
        while True:
            await asyncio.sleep(self.refresh_seconds)
            self._seeded.clear()
            try:
                await self.keys.load()
                await self._seed_budgets()
            except Exception as exc:
                log.warning("key cache refresh failed: %s", exc)

    async def _listen(self) -> None:
        assert self.keys is not None
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            key_id = message["data"]
                            await self.keys.reload(key_id.decode() if isinstance(key_id, bytes) else str(key_id))
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key invalidation channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)


def build_access(gateway: Gateway) -> Access:
    config = gateway.config
    secret = config.auth.master_key.get_secret_value() if config.auth.master_key else None
    master = secret or os.environ.get("CORRAL_MASTER_KEY") or None
    jwt = None
    if config.auth.jwt is not None:
        from corral.gateway.auth_jwt import JWTVerifier  # PyJWT + cryptography: only when used

        jwt = JWTVerifier(config.auth.jwt)
    authenticator = Authenticator(config.auth, master_key=master, jwt=jwt)
    redis = None
    counters: Counters
    if config.cache.url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(config.cache.url)
        counters = RedisCounters(redis, prefix=config.cache.prefix)
    else:
        counters = MemoryCounters()
    model_limits = {name: (m.rpm, m.tpm) for name, m in config.models.items() if m.rpm or m.tpm}
    jwt_config = config.auth.jwt
    limiter = Limiter(counters, model_limits=model_limits,
                      subject_limits=jwt_config.limits if jwt_config else None,
                      team_limits=jwt_config.team_limits if jwt_config else None)
    return Access(gateway, authenticator, limiter, PricingTable(config.pricing), redis=redis)


def install(gateway: Gateway) -> None:
    access = build_access(gateway)
    gateway.components["access"] = access
    gateway.interceptors.append(access)
    gateway.guards.append(access.authenticator.authenticate)
    gateway.startup_hooks.append(access.startup)
    gateway.shutdown_hooks.append(access.shutdown)
