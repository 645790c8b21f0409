"""Admission: who is calling, may they use this model, and is there room for the call.

`admit` authenticates the caller (no database read for a cached key), checks the model
is allowed, seeds a JWT caller's budget counters on its first call of a period, and
takes the rate-limit slot and holds the call's maximum cost against its budgets; the
call then carries its principal and reservation. A
refusal is an `ApiError` the route renders in its surface's format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request

from corral.gateway.auth import Authenticator, Principal
from corral.gateway.budgets import BudgetSeeder
from corral.gateway.call import Call
from corral.gateway.errors import ApiError
from corral.gateway.limits import Limiter, LimitExceeded

log = logging.getLogger("corral.access")

RejectionCounter = Callable[[str], None]  # which limit refused ("key_rpm", "budget", ...)
CostCeiling = Callable[[Call], float]  # the most a call may cost (`Billing.max_cost`)


class Access:
    def __init__(self, authenticator: Authenticator, limiter: Limiter, budgets: BudgetSeeder,
                 count_rejection: RejectionCounter | None = None, max_cost: CostCeiling | None = None) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.budgets = budgets
        self.count_rejection = count_rejection
        self.max_cost = max_cost

    async def authenticate(self, request: Request) -> Principal:
        """The caller of a route that is not a model call (lists, reports, runs)."""
        return await self.authenticator.authenticate(request)

    async def admit(self, request: Request, call: Call, principal: Principal | None = None) -> None:
        """``principal``: the caller, when the route authenticated it already (before it
        read the body); else the request is authenticated here."""
        if principal is None:
            principal = await self.authenticator.authenticate(request)
        self.authenticator.check_model(principal, call.model)
        if principal.kind == "jwt":
            await self.budgets.seed_caller(principal, call.model)
        max_cost = 0.0
        if self.max_cost is not None and self.limiter.plan(principal, call.model).budgets:
            max_cost = self.max_cost(call)  # held against the budgets until the call is settled
        try:
            reservation = await self.limiter.check(principal, call.model, max_cost)
        except LimitExceeded as exc:
            if self.count_rejection is not None:
                self.count_rejection(exc.which)
            raise
        except ApiError:
            raise
        except Exception as exc:  # the shared counters are down: refuse rather than go unlimited
            log.error("limits backend failed: %s", exc)
            raise ApiError(503, "Rate limits cannot be checked right now", code="limits_unavailable") from None
        call.principal = principal
        call.reservation = reservation

    async def aclose(self) -> None:
        await self.limiter.aclose()
        if self.authenticator.jwt is not None:
            await self.authenticator.jwt.aclose()
