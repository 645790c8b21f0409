"""What a call costs, and who pays: the usage row and the limit counters.

`max_cost` prices what a call may cost at most (its input estimate and ``max_tokens``,
or ``billing.default_max_tokens``, at the dearest of its deployments' prices): that is
held against the caller's budgets from admission until `settle`.

`settle` charges a finished call on any surface: its tokens and cost go to the caller's
shared counters (tpm, budgets, releasing what it held) and its usage row to the batch
writer, whose spool has it on disk before the call's answer ends (no database write on
the request path). A budget crossing a threshold is told to the budget alerts.

An agent run is charged per model call instead (`charge_run_call`,
the runner's meter): the run keeps its caller as JSON, so its model calls are charged
to it on whichever replica executes the run, and the surface's own call is not charged
twice (`Call.metered`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from corral.gateway.auth import ANONYMOUS, KeyCache, Principal
from corral.gateway.budgets import BudgetAlerts
from corral.gateway.call import Call
from corral.gateway.estimate import input_tokens
from corral.gateway.limits import Limiter, Reservation
from corral.llm.pricing import PricingTable
from corral.llm.router import CallContext, Router
from corral.llm.types import Usage
from corral.store import BatchWriter, UsageRecord
from corral.store.store import BatchRecord
from corral.telemetry.agent_metrics import AgentMetrics

log = logging.getLogger("corral.billing")

_KINDS = frozenset({"anonymous", "master", "static", "key", "jwt"})


class Billing:
    def __init__(self, limiter: Limiter, pricing: PricingTable, keys: KeyCache,
                 writer: BatchWriter[BatchRecord], router: Router | None = None, *,
                 default_max_tokens: int = 4096, alerts: BudgetAlerts | None = None,
                 agent_metrics: AgentMetrics | None = None) -> None:
        self.limiter = limiter
        self.pricing = pricing
        self.keys = keys
        self.writer = writer
        self.agent_metrics = agent_metrics
        self.router = router
        self.default_max_tokens = default_max_tokens
        self.alerts = alerts
        self._rates: dict[str, tuple[float, float]] = {}  # model -> USD per input, per output token

    def max_cost(self, call: Call) -> float:
        """The most this call may cost, priced before it runs (0: no price known)."""
        rates = self._rates.get(call.model)
        if rates is None:
            rates = self._rates[call.model] = self._rates_of(call.model)
        per_input, per_output = rates
        if not per_input and not per_output:
            return 0.0
        chat = call.request
        inputs = input_tokens(chat) if chat is not None else 0
        outputs = chat.max_tokens if chat is not None and chat.max_tokens else self.default_max_tokens
        return per_input * inputs + per_output * outputs

    def _rates_of(self, model: str) -> tuple[float, float]:
        config = self.router.model_config(model) if self.router is not None else None
        upstreams = [d.model for d in config.all_deployments()] if config is not None else [None]
        million = 1_000_000
        per_input = max(self.pricing.cost(Usage(million, 0), model, u) for u in upstreams) / million
        per_output = max(self.pricing.cost(Usage(0, million), model, u) for u in upstreams) / million
        return per_input, per_output

    async def settle(self, call: Call) -> None:
        """A finished call, charged to its admitted caller (not when it was an agent run,
        whose model calls were charged one by one, nor when admission refused it)."""
        if call.reservation is None:
            return
        if call.metered:
            await self.limiter.release(call.reservation)
            return
        status = "ok" if call.error is None and call.status < 400 else f"error:{call.status}"
        await self._record(call.reservation, call.request_id, call.model, call.ctx, call.usage, call.cost_usd or 0.0,
                           call.started, status, estimated=call.estimated)

    async def charge_run_call(self, alias: str, ctx: CallContext, usage: Usage, started: float) -> None:
        """One model call of an agent run: charged to the run's caller (``ctx.caller``)."""
        caller = ctx.caller
        principal = self.principal_for(caller)
        named = str(caller.get("model") or alias) if caller else alias
        reservation = self.limiter.charges(principal, named, alias)
        # Each model call is a row of its own (its usage id); the run's request id is kept with it.
        request_id = (ctx.request_id or ctx.run_id or "run")[:100]
        cost = self.pricing.cost(usage, alias, ctx.upstream_model)
        await self._record(reservation, request_id, alias, ctx, usage, cost, started, "ok")
        if self.agent_metrics is not None and ctx.agent:
            self.agent_metrics.model_call(ctx.agent, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                          cached_input_tokens=usage.cached_input_tokens,
                                          reasoning_tokens=usage.reasoning_tokens, cost_usd=cost)

    async def charge_embedding(self, alias: str, tokens: int, ctx: CallContext) -> None:
        """Embedding calls a knowledge base makes (ingestion, queries): charged like a run's
        model call, to the caller its context names (else unattributed)."""
        await self.charge_run_call(alias, ctx, Usage(input_tokens=tokens), time.perf_counter())

    def principal_for(self, caller: Mapping[str, Any] | None) -> Principal:
        """The principal a run's caller (`Call.caller`) stands for now: its key and team from
        the cache (a key revoked since then still gets its usage rows, not its counters)."""
        if not caller or caller.get("kind") not in _KINDS:
            return ANONYMOUS
        key_id = caller.get("key_id")
        key = self.keys.by_id(str(key_id)) if key_id else None
        team_id = caller.get("team_id")
        team = self.keys.team(str(team_id)) if team_id else None
        return Principal(kind=caller["kind"], subject=str(caller.get("subject") or caller["kind"]),
                         key_id=str(key_id) if key_id else None, team_id=str(team_id) if team_id else None,
                         key=key, team=team)

    async def _record(self, reservation: Reservation, request_id: str, model: str, ctx: CallContext,
                      usage: Usage | None, cost: float, started: float, status: str, *,
                      estimated: bool = False) -> None:
        if reservation.tpm_counters or reservation.budgets:  # else there is nothing to count
            try:
                crossings = await self.limiter.record(reservation, usage, cost)
            except Exception as exc:
                log.error("could not add usage to the limit counters: %s", exc)
            else:
                if crossings and self.alerts is not None:
                    self.alerts.crossed(crossings)
        principal = reservation.principal
        await self.writer.put(UsageRecord(
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
            agent=ctx.agent,
            estimated=estimated,
        ))
