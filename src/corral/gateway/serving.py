"""What one version of the config serves, and how a request is pinned to it.

A `Serving` holds every part a request reads that a config reload replaces: the router,
the pricing, the authenticator, admission, billing, the agent runtime, the pipeline and
the route handlers built on them. The long-lived parts (store, batch writer, key cache,
limiter counters, Redis clients, metrics, access log) are not in it: each `Serving` is
built over the same ones (`corral.gateway.app.build_serving`).

`PinServing` (the innermost middleware) reads the gateway's current `Serving` once per
request, puts it in the scope and counts the request in flight on it until the response
is over (a stream's last byte included); the route endpoints (`per_config`) read it from
the scope. A reload swaps `Gateway.current` in one assignment: a request that started
before it finishes on the version it started with, and the old version is closed when
its count reaches zero (`InFlight.idle`), or after the drain timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.config.schema import CorralConfig
from corral.gateway.access import Access
from corral.gateway.admin import AdminApi
from corral.gateway.agent_runtime import AgentRuntime
from corral.gateway.anthropic import MessagesApi
from corral.gateway.auth import Authenticator
from corral.gateway.billing import Billing
from corral.gateway.call import Models
from corral.gateway.embeddings import EmbeddingsApi
from corral.gateway.openai import ChatCompletionsApi, ModelsApi
from corral.gateway.pipeline import CallPipeline
from corral.gateway.responses import ResponsesApi
from corral.gateway.runs import RunsApi
from corral.gateway.verification import Verification, VerificationApi
from corral.llm.cooldowns import RedisHealth
from corral.llm.pricing import PricingTable
from corral.llm.router import Router

if TYPE_CHECKING:
    from corral.gateway.a2a import A2AApi
    from corral.gateway.knowledge import KnowledgeRoutes
    from corral.gateway.mcp_server import McpEndpoint

log = logging.getLogger("corral.gateway.reload")

SERVING = "corral.serving"  # the scope key of the request's `Serving` (an ASGI extension key)

Endpoint = Callable[[Request], Awaitable[Response]]


class InFlight:
    """Requests (streams included) being served by one `Serving`."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def idle(self, within: float) -> bool:
        """True once no request is in flight; False if some still are after ``within`` seconds."""
        if self.count == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True, eq=False)
class Handlers:
    """The route handlers of one `Serving` (`build_routes` dispatches to them per request)."""

    chat: ChatCompletionsApi
    model_list: ModelsApi
    messages: MessagesApi
    responses: ResponsesApi
    embeddings: EmbeddingsApi
    verification: VerificationApi
    admin: AdminApi
    runs: RunsApi
    a2a: A2AApi | None = None  # only with agents (the A2A SDK costs startup time)
    knowledge: KnowledgeRoutes | None = None  # only with knowledge bases


@dataclass(eq=False)
class Serving:
    config: CorralConfig
    config_hash: str
    router: Router
    pricing: PricingTable
    authenticator: Authenticator
    access: Access
    billing: Billing
    agents: AgentRuntime
    models: Models
    pipeline: CallPipeline
    verification: Verification
    router_health: RedisHealth | None  # cooldowns and latencies shared through Redis
    handlers: Handlers
    mcp: McpEndpoint | None = None  # agents over MCP (only with agents)
    owns_providers: bool = True  # False when the providers were handed in (tests): the gateway closes them
    inflight: InFlight = field(default_factory=InFlight)

    async def start(self) -> None:
        """Raises when this version cannot serve (strict verification refused a provider)."""
        if self.router_health is not None:
            await self.router_health.start()
        await self.verification.start()
        await self.agents.start()
        if self.mcp is not None:
            await self.mcp.start()

    async def stop(self) -> None:
        if self.mcp is not None:
            await self.mcp.stop()
        await self.agents.stop()
        await self.verification.stop()
        if self.router_health is not None:
            await self.router_health.stop()
        if self.authenticator.jwt is not None:
            await self.authenticator.jwt.aclose()
        if self.owns_providers:
            await self.router.aclose()

    async def retire(self, within: float) -> None:
        """Replaced by a newer version: let its requests and agent runs finish (for at
        most ``within`` seconds), then close it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # New runs are no longer claimed here; running ones finish on this version.
        self.agents.service.stop_claiming()
        idle = await self.inflight.idle(within)
        runs_idle = await self.agents.service.idle(max(0.0, deadline - loop.time()))
        if not idle or not runs_idle:
            log.warning("config %s: %d requests and %d runs still in flight after %.0f s; closing it",
                        self.config_hash, self.inflight.count, len(self.agents.service.live), within)
        with contextlib.suppress(Exception):
            await self.stop()
        log.info("config %s retired", self.config_hash)


class ServingSource(Protocol):
    @property
    def current(self) -> Serving: ...


class PinServing:
    """ASGI middleware: each HTTP request is served by the version current when it arrived."""

    def __init__(self, app: ASGIApp, *, source: ServingSource) -> None:
        self.app = app
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        serving = scope[SERVING] = self.source.current
        flight = serving.inflight
        flight.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            flight.leave()


def serving_of(request: Request | Scope) -> Serving:
    scope = request.scope if isinstance(request, Request) else request
    serving: Serving = scope[SERVING]
    return serving


def per_config(pick: Callable[[Serving], Endpoint]) -> Endpoint:
    """A route endpoint served by the request's own `Serving` (one scope read, one call)."""

    async def endpoint(request: Request) -> Response:
        return await pick(request.scope[SERVING])(request)

    return endpoint


def guarded(pick: Callable[[AdminApi], Endpoint]) -> Endpoint:
    """An admin endpoint (the master key required) of the request's `Serving`."""

    async def endpoint(request: Request) -> Response:
        admin = serving_of(request).handlers.admin
        return await admin.guarded(pick(admin))(request)

    return endpoint


def a2a(pick: Callable[[A2AApi], Endpoint]) -> Endpoint:
    """An A2A endpoint; an unknown route while the config has no agents."""

    async def endpoint(request: Request) -> Response:
        api = serving_of(request).handlers.a2a
        if api is None:
            raise HTTPException(404)
        return await pick(api)(request)

    return endpoint


def knowledge_route(pick: Callable[[KnowledgeRoutes], Endpoint]) -> Endpoint:
    """A knowledge endpoint of the request's `Serving` (checks its caller with that version's auth)."""

    async def endpoint(request: Request) -> Response:
        routes = serving_of(request).handlers.knowledge
        if routes is None:
            raise HTTPException(404)
        return await pick(routes)(request)

    return endpoint


class McpRoute:
    """ASGI: the request's `Serving`'s MCP endpoint; an unknown route while it has none."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mcp = serving_of(scope).mcp
        if mcp is None:
            raise HTTPException(404)
        await mcp(scope, receive, send)
