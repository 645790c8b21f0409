"""The typed objects one request carries through the gateway.

`Exchange`: one HTTP request/response, made by `CorralMiddleware` (request id, when it
arrived, how long it waited upstream) and reached from a route with `exchange_of`.
`Call`: one model call on any surface, from admission to its usage record: who is
calling (principal, limits reservation), what they asked (model, stream, session), and
what happened (status, usage, error, timings). Every component that takes part in a
call (access, billing, metrics, tracing, agents) reads and writes these fields; nothing
travels in string-keyed dicts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from starlette.requests import Request
from starlette.types import Scope

from corral.gateway.auth import ANONYMOUS, Principal
from corral.gateway.limits import Reservation
from corral.llm.router import CallContext, Router
from corral.llm.types import ChatRequest, ChatResult, ModelInfo, StreamEvent, Usage

Surface = Literal["openai", "anthropic", "responses", "embeddings", "agents", "a2a", "mcp"]
EXCHANGE = "corral.exchange"  # the scope key of the request's `Exchange` (an ASGI extension key)


@dataclass(slots=True, eq=False)
class Exchange:
    request_id: str
    started: float  # perf_counter() when the request reached the middleware
    upstream_seconds: float = 0.0  # reported by the route: time spent waiting on the upstream
    call: Call | None = None  # the model call this request made, once admitted


def exchange_of(request: Request | Scope) -> Exchange:
    scope = request.scope if isinstance(request, Request) else request
    exchange: Exchange = scope[EXCHANGE]
    return exchange


@dataclass(slots=True, eq=False)
class Call:
    exchange: Exchange
    surface: Surface
    model: str  # as the client named it
    stream: bool
    started: float  # perf_counter() when the route started on it
    ctx: CallContext  # the router's side: deployment, attempts, upstream time
    principal: Principal = ANONYMOUS
    reservation: Reservation | None = None  # the rate-limit slot and budgets, from admission
    session_id: str | None = None  # x-corral-session-id (agents as chat models)
    metered: bool = False  # an agent run: its model calls were charged one by one
    trace_parent: Any = None  # the caller's trace context (``traceparent``), when tracing is on
    trace_headers: dict[str, str] | None = None  # the same as W3C headers, for an agent run it starts
    request: ChatRequest | None = None  # what was asked, when the surface parsed a chat request
    status: int = 200
    usage: Usage | None = None
    cost_usd: float | None = None  # priced once, when the call is over
    estimated: bool = False  # usage counted from the relayed output (a cut stream without usage)
    error: BaseException | None = None
    ttft_seconds: float | None = None
    finished: bool = False

    @property
    def request_id(self) -> str:
        return self.exchange.request_id

    def fail(self, status: int, error: BaseException) -> None:
        self.status, self.error = status, error

    def caller(self) -> dict[str, Any]:
        """Who a run started by this call is charged to, as JSON kept with the run."""
        return caller_json(self.principal, self.model)


def caller_json(principal: Principal, model: str) -> dict[str, Any]:
    return {"kind": principal.kind, "subject": principal.subject, "key_id": principal.key_id,
            "team_id": principal.team_id, "model": model}


def owner_of(principal: Principal) -> str | None:
    """Who a session belongs to: the authenticated subject; None (every session) for the
    master key or with auth off."""
    if principal.kind == "anonymous" or principal.is_admin:
        return None
    return str(principal.subject)


class ChatTarget(Protocol):
    """What a chat request can be served by: a model alias (through the router) or an agent."""

    @property
    def name(self) -> str: ...

    async def complete(self, request: ChatRequest, call: Call) -> ChatResult: ...

    def stream(self, request: ChatRequest, call: Call) -> AsyncIterator[StreamEvent]: ...


@dataclass(slots=True)
class RouterTarget:
    router: Router
    name: str  # the model alias

    async def complete(self, request: ChatRequest, call: Call) -> ChatResult:
        return await self.router.complete(self.name, request, call.ctx)

    def stream(self, request: ChatRequest, call: Call) -> AsyncIterator[StreamEvent]:
        return self.router.stream(self.name, request, call.ctx)


class AgentTargets(Protocol):
    """The agents the chat surfaces can name as models (`corral.gateway.agent_chat`)."""

    def target(self, name: str) -> ChatTarget | None: ...

    def models(self) -> list[ModelInfo]: ...


class Models:
    """What a model name on a chat surface resolves to: a public agent first, then a
    router alias, then ``default_model`` (a name Corral does not know is served by it);
    and the list `/v1/models` shows."""

    def __init__(self, router: Router, agents: AgentTargets | None = None, *, default_model: str | None = None) -> None:
        self.router = router
        self.agents = agents
        self.default_model = default_model

    def resolve(self, model: str) -> ChatTarget | None:
        target = self.named(model)
        if target is None and self.default_model is not None:
            target = self.named(self.default_model)
        return target

    def named(self, model: str) -> ChatTarget | None:
        """The target of exactly this name (no default)."""
        if self.agents is not None:
            target = self.agents.target(model)
            if target is not None:
                return target
        if self.router.has_model(model):
            return RouterTarget(self.router, model)
        return None

    def list(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {m.id: m for m in self.router.list_models()}
        if self.agents is not None:
            for info in self.agents.models():
                seen.setdefault(info.id, info)
        return list(seen.values())
