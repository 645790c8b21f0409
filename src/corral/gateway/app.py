"""The ASGI app factory: every gateway component built explicitly, in order, from the
config alone, each given its dependencies; then the routes and middleware, declared in
one list each. Nothing is global, so tests build as many apps as they like.

The path of a model call through these parts is `corral.gateway.pipeline`; the
picture is docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.agents.registry import AgentRegistry
from corral.config.schema import CorralConfig
from corral.gateway.access import Access
from corral.gateway.admin import AdminApi
from corral.gateway.agent_chat import AgentChatTargets
from corral.gateway.agent_runtime import AgentRuntime
from corral.gateway.anthropic import MessagesApi
from corral.gateway.auth import Authenticator, AuthError, KeyCache
from corral.gateway.auth_throttle import AuthFailureCounter, FailedAuthThrottle
from corral.gateway.billing import Billing
from corral.gateway.budgets import BudgetAlerts, BudgetSeeder, StoredSpend
from corral.gateway.call import Models
from corral.gateway.counters import MemoryCounters, RedisCounters
from corral.gateway.drain import Drain
from corral.gateway.embeddings import EmbeddingsApi
from corral.gateway.errors import ApiError, error_response, surface_for_path
from corral.gateway.health import HealthApi, Readiness
from corral.gateway.keysync import KeySync
from corral.gateway.knowledge import Access as KnowledgeAccess
from corral.gateway.knowledge import Authorize, KnowledgeRoutes
from corral.gateway.limits import Counters, Limiter
from corral.gateway.metrics import CallObserver, queue_depth, router_health
from corral.gateway.middleware import CorralMiddleware
from corral.gateway.openai import ChatCompletionsApi, ModelsApi
from corral.gateway.openapi import reference_routes
from corral.gateway.pipeline import CallPipeline
from corral.gateway.responses import ResponsesApi
from corral.gateway.runs import RunsApi
from corral.gateway.shared_counters import SharedFileCounters
from corral.gateway.tracing import CallTracer
from corral.gateway.verification import Verification, VerificationApi
from corral.knowledge.service import KnowledgeService
from corral.llm.cooldowns import RedisHealth
from corral.llm.errors import ProviderError
from corral.llm.pricing import PricingTable
from corral.llm.provider import Provider
from corral.llm.router import Router
from corral.process import settle_after_startup
from corral.store import BatchWriter, Store
from corral.store.engine import data_dir
from corral.store.spool import UsageSpool
from corral.store.store import BatchRecord
from corral.telemetry.access_log import AccessLog
from corral.telemetry.agent_metrics import AgentMetrics
from corral.telemetry.alerts import Alerter
from corral.telemetry.metrics import GatewayMetrics
from corral.telemetry.scrape import ScrapeAccess
from corral.telemetry.tracing import Tracing, build_tracing

if TYPE_CHECKING:
    from corral.gateway.mcp_server import McpEndpoint

log = logging.getLogger("corral.gateway")

# Response headers a browser client may read across origins (with `server.cors_origins`).
EXPOSED_HEADERS = ["x-request-id", "request-id", "x-corral-overhead-ms", "retry-after"]


@dataclass
class Gateway:
    """Every part `build_gateway` made, by name and type (``app.state.gateway``)."""

    config: CorralConfig
    router: Router
    store: Store
    writer: BatchWriter[BatchRecord]  # usage and audit rows, written in batches
    spool: UsageSpool | None  # usage rows on local disk until they are stored (crash-safe)
    metrics: GatewayMetrics | None
    access_log: AccessLog  # one line per model call, written in batches off the request path
    tracing: Tracing | None
    authenticator: Authenticator
    limiter: Limiter
    access: Access
    keys: KeySync
    budgets: BudgetSeeder
    billing: Billing
    agents: AgentRuntime
    models: Models
    pipeline: CallPipeline
    verification: Verification
    router_health: RedisHealth | None  # cooldowns and latencies shared through Redis
    knowledge: KnowledgeService | None  # the knowledge bases (`knowledge:`), when there are any
    readiness: Readiness
    started_at: float
    mcp: McpEndpoint | None = None  # agents over MCP (only with agents: the SDK costs startup time)

    async def start(self) -> None:
        """Start the parts in dependency order; `stop` stops them in reverse."""
        config = self.config
        if config.server.workers > 1 and not config.cache.url:
            counters = self.limiter.counters
            if isinstance(counters, SharedFileCounters):
                log.warning("limits and budgets are shared by this machine's %d workers through %s; with more "
                            "than one machine set cache.url (Redis) to share them", config.server.workers,
                            counters.path)
            else:
                log.warning("limits and budgets are counted per worker process; set cache.url (Redis) to share them")
        await self.access_log.start()
        if self.metrics is not None:
            await self.metrics.start()
        await self.store.migrate()
        if self.spool is not None:  # rows a crashed process left: stored before budgets are seeded
            await self.spool.replay(self.store.usage.insert_many)
            self.spool.start()
        await self.keys.start()  # the key cache loaded and the budget counters seeded from the store
        self.writer.start()
        if self.router_health is not None:
            await self.router_health.start()
        if self.billing.alerts is not None:
            self.billing.alerts.start()
        await self.verification.start()
        if self.knowledge is not None:
            for note in self.knowledge.notes():  # e.g. a base without an embedder searches by keyword alone
                log.info("knowledge: %s", note)
        await self.agents.start()
        if self.mcp is not None:
            await self.mcp.start()
        self.readiness.ready = True

    async def stop(self) -> None:
        self.readiness.ready = False
        if self.mcp is not None:
            await self.mcp.stop()
        await self.agents.stop()
        if self.knowledge is not None:
            await self.knowledge.aclose()
        await self.verification.stop()
        if self.router_health is not None:
            await self.router_health.stop()
        await self.keys.stop()
        await self.writer.aclose()
        if self.billing.alerts is not None:
            await self.billing.alerts.stop()
        if self.spool is not None:
            self.spool.close()
        await self.access.aclose()
        if self.tracing is not None:
            await self.tracing.shutdown()
        await self.access_log.stop()  # the lines still buffered are written
        if self.metrics is not None:
            await self.metrics.stop()
        await self.router.aclose()
        await self.store.aclose()


def build_gateway(
    config: CorralConfig,
    *,
    providers: Mapping[str, Provider] | None = None,
    boot_summary: dict[str, Any] | None = None,
    shared_counters: str | None = None,
) -> Gateway:
    import time

    metrics = GatewayMetrics() if config.observability.metrics else None
    tracing = build_tracing(config.observability.tracing)
    pricing = PricingTable(config.pricing)
    router = build_router(config, providers, tracing, pricing)
    store = Store.connect(config.database.url, pool_size=config.database.pool_size, pooler=config.database.pooler)
    spool = build_spool(config)  # usage rows durable on this machine before a call's last byte
    writer: BatchWriter[BatchRecord] = BatchWriter(store.write_batch, journal=spool)
    access_log = AccessLog(enabled=config.observability.access_log)
    observer = CallObserver(metrics, access_log)

    keys = KeyCache(store)
    authenticator = build_authenticator(config, keys, metrics)
    redis = _redis(config.cache.url)
    limiter = build_limiter(config, redis, StoredSpend(store), shared_counters)
    budgets = BudgetSeeder(limiter, store)
    alerts = config.billing.alerts
    budget_alerts = BudgetAlerts(Alerter(list(alerts.routes)), alerts.thresholds) if alerts.routes else None
    agent_metrics = AgentMetrics(metrics.registry) if metrics is not None else None
    billing = Billing(limiter, pricing, keys, writer, router, default_max_tokens=config.billing.default_max_tokens,
                      alerts=budget_alerts, agent_metrics=agent_metrics)
    access = Access(authenticator, limiter, budgets, observer.count_rejection, max_cost=billing.max_cost)
    key_sync = KeySync(keys, budgets, redis=redis, channel=f"{config.cache.prefix}keys")

    knowledge = KnowledgeService.from_config(config.knowledge, root=Path.cwd(), data_dir=data_dir(), router=router,
                                             on_usage=billing.charge_embedding) if config.knowledge else None
    registry = AgentRegistry.from_config(config, knowledge=knowledge)
    agents = AgentRuntime(config, registry, router, store, meter=billing.charge_run_call, observer=agent_metrics,
                          tracing=tracing)
    models = Models(router, AgentChatTargets(agents), default_model=config.default_model)
    tracer = CallTracer(tracing) if tracing is not None else None
    drain = Drain(config.server.shutdown_timeout)
    pipeline = CallPipeline(models, access, pricing, observer, billing, tracer, drain)

    health = RedisHealth.from_url(router, config.cache.url, prefix=config.cache.prefix) if config.cache.url else None
    if metrics is not None:
        metrics.deployments = router_health(router)
        metrics.watch_queue("usage", queue_depth(writer))
    mcp = None
    if config.agents or knowledge is not None:
        from corral.gateway.mcp_server import McpEndpoint  # the MCP SDK: only with agents or knowledge

        mcp = McpEndpoint(agents, pipeline, knowledge)
    return Gateway(
        config=config, router=router, store=store, writer=writer, spool=spool, metrics=metrics, access_log=access_log,
        tracing=tracing,
        authenticator=authenticator, limiter=limiter, access=access, keys=key_sync, budgets=budgets,
        billing=billing, agents=agents, models=models, pipeline=pipeline,
        verification=Verification(config, router, boot_summary=boot_summary), router_health=health,
        knowledge=knowledge,
        readiness=Readiness(), started_at=time.time(), mcp=mcp,
    )


def create_app(
    config: CorralConfig,
    *,
    providers: Mapping[str, Provider] | None = None,
    notes: list[str] | None = None,
    boot_summary: dict[str, Any] | None = None,
    server_process: bool = False,
    shared_counters: str | None = None,
) -> Starlette:
    """`providers` replaces the configured ones (tests); `boot_summary` is what `corral up`
    found (shown by `/v1/startup/verification`); `server_process`: this process is the
    server (`corral serve`), not a test or an embedding app, so process-wide settings
    apply (`corral.process`)."""
    gateway = build_gateway(config, providers=providers, boot_summary=boot_summary, shared_counters=shared_counters)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        restore_signals = None
        if server_process:
            settle_after_startup(config.server.gc_young_threshold)
            if gateway.pipeline.drain is not None:  # streams are ended cleanly at the shutdown timeout
                restore_signals = gateway.pipeline.drain.install_signals(asyncio.get_running_loop())
        try:
            yield
        finally:
            if restore_signals is not None:
                restore_signals()
            await gateway.stop()

    middleware = [Middleware(CorralMiddleware, max_body_bytes=config.server.max_body_bytes,
                             on_response_start=gateway.pipeline.observer.response_started)]
    if config.server.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=config.server.cors_origins,
                                     allow_methods=["*"], allow_headers=["*"], expose_headers=EXPOSED_HEADERS))
    app = Starlette(
        routes=build_routes(gateway),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            ProviderError: _provider_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.gateway = gateway
    return app


def build_routes(gateway: Gateway) -> list[BaseRoute]:
    """Every route the gateway serves."""
    pipeline, models, config = gateway.pipeline, gateway.models, gateway.config
    health = HealthApi(gateway.readiness)
    chat = ChatCompletionsApi(pipeline)
    model_list = ModelsApi(pipeline, models, int(gateway.started_at))
    messages = MessagesApi(pipeline, models)
    responses = ResponsesApi(pipeline)
    embeddings = EmbeddingsApi(pipeline, gateway.router)
    verification = VerificationApi(gateway.verification, gateway.authenticator)
    admin = AdminApi(gateway.authenticator, gateway.store, gateway.limiter, gateway.keys, gateway.budgets,
                     gateway.writer)
    runs = RunsApi(gateway.agents, pipeline)
    g = admin.guarded
    routes: list[BaseRoute] = [
        Route("/health", health.health, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/v1/chat/completions", chat.create, methods=["POST"]),
        Route("/v1/models", model_list.list, methods=["GET"]),
        Route("/v1/models/{model:path}", model_list.get, methods=["GET"]),
        Route("/v1/messages", messages.create, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        Route("/v1/responses", responses.create, methods=["POST"]),
        Route("/v1/embeddings", embeddings.create, methods=["POST"]),
        Route("/v1/startup/verification", verification.report, methods=["GET"]),
        Route("/admin/keys", g(admin.create_key), methods=["POST"]),
        Route("/admin/keys", g(admin.list_keys), methods=["GET"]),
        Route("/admin/keys/{key_id}", g(admin.get_key), methods=["GET"]),
        Route("/admin/keys/{key_id}", g(admin.update_key), methods=["PATCH"]),
        Route("/admin/keys/{key_id}", g(admin.revoke_key), methods=["DELETE"]),
        Route("/admin/keys/{key_id}/revoke", g(admin.revoke_key), methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", g(admin.rotate_key), methods=["POST"]),
        Route("/admin/teams", g(admin.create_team), methods=["POST"]),
        Route("/admin/teams", g(admin.list_teams), methods=["GET"]),
        Route("/admin/spend", g(admin.spend), methods=["GET"]),
        Route("/v1/agents", runs.list_agents, methods=["GET"]),
        Route("/v1/agents/{name}/runs", runs.create_run, methods=["POST"]),
        Route("/v1/runs/{run_id}", runs.get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}/events", runs.run_events, methods=["GET"]),
        Route("/v1/runs/{run_id}/cancel", runs.cancel_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/approve", runs.approve_run, methods=["POST"]),
        Route("/v1/sessions", runs.list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", runs.get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}", runs.delete_session, methods=["DELETE"]),
    ]
    if gateway.metrics is not None:
        scrape = _scrape(gateway.metrics, gateway.authenticator, ScrapeAccess(config.observability))
        routes.append(Route("/metrics", scrape, methods=["GET"]))
    if config.agents:  # the A2A SDK costs most of the startup time in imports: only with agents
        from corral.gateway.a2a import A2AApi

        a2a = A2AApi(gateway.agents, pipeline, auth_required=gateway.authenticator.required)
        routes += [
            Route("/.well-known/agent-card.json", a2a.card, methods=["GET"]),
            Route("/.well-known/agent.json", a2a.card, methods=["GET"]),  # the pre-0.3 path many clients use
            Route("/a2a/{name}/.well-known/agent-card.json", a2a.card, methods=["GET"]),
            Route("/a2a/{name}", a2a.rpc, methods=["POST"]),
        ]
    if gateway.knowledge is not None:
        routes += KnowledgeRoutes(gateway.knowledge, knowledge_access(gateway.authenticator)).routes()
    if gateway.mcp is not None:
        routes += [Route("/mcp", gateway.mcp, methods=["GET", "POST", "DELETE"]),
                   Route("/mcp/", gateway.mcp, methods=["GET", "POST", "DELETE"])]
    return [*routes, *reference_routes(routes)]  # /openapi.json and /docs describe every route above


def build_router(config: CorralConfig, providers: Mapping[str, Provider] | None, tracing: Tracing | None,
                 pricing: PricingTable) -> Router:
    from corral.llm.registry import build_provider

    built = dict(providers) if providers is not None else {
        name: build_provider(name, p) for name, p in config.providers.items() if p.enabled}
    passthrough = frozenset(n for n, p in config.providers.items() if getattr(p, "passthrough", False))
    return Router(config.models, built, settings=config.router, passthrough=passthrough, tracing=tracing,
                  pricing=pricing, provider_types={name: p.type for name, p in config.providers.items()})


def build_spool(config: CorralConfig) -> UsageSpool | None:
    billing = config.billing
    if not billing.spool:
        return None
    directory = Path(billing.spool_dir).expanduser() if billing.spool_dir else data_dir() / "spool"
    return UsageSpool(directory, fsync_interval=billing.fsync_interval)


def build_authenticator(config: CorralConfig, keys: KeyCache, metrics: GatewayMetrics | None) -> Authenticator:
    master = config.auth.master_key.get_secret_value() if config.auth.master_key else None
    jwt = None
    if config.auth.jwt is not None:
        from corral.gateway.auth_jwt import JWTVerifier  # PyJWT + cryptography: only when used

        jwt = JWTVerifier(config.auth.jwt)
    limits = config.auth.throttle
    throttle = FailedAuthThrottle(limit=limits.limit, window_seconds=limits.window_seconds,
                                  base_delay=limits.base_delay, max_delay=max(limits.max_delay, limits.base_delay),
                                  observer=AuthFailureCounter(metrics.registry) if metrics is not None else None)
    return Authenticator(config.auth, master_key=master or None, keys=keys, jwt=jwt, throttle=throttle)


def build_limiter(config: CorralConfig, redis: Any, stored_spend: StoredSpend | None = None,
                  shared_counters: str | None = None) -> Limiter:
    counters: Counters
    if redis is not None:
        counters = RedisCounters(redis, prefix=config.cache.prefix)
    elif shared_counters is not None:
        counters = SharedFileCounters(shared_counters)
    else:
        counters = MemoryCounters()
    model_limits = {name: (m.rpm, m.tpm) for name, m in config.models.items() if m.rpm or m.tpm}
    jwt = config.auth.jwt
    return Limiter(counters, stored_spend=stored_spend, model_limits=model_limits,
                   subject_limits=jwt.limits if jwt else None, team_limits=jwt.team_limits if jwt else None)


def _redis(url: str | None) -> Any:
    if not url:
        return None
    import redis.asyncio as aioredis

    return aioredis.from_url(url)


def knowledge_access(authenticator: Authenticator) -> Authorize:
    """Any caller may query a knowledge base; adding or removing documents needs the master key."""
    async def authorize(request: Request, access: KnowledgeAccess) -> None:
        principal = await authenticator.authenticate(request)
        if access == "write" and authenticator.required and not principal.is_admin:
            raise AuthError(403, "Changing a knowledge base needs the master key", code="forbidden")

    return authorize


def _scrape(metrics: GatewayMetrics, authenticator: Authenticator, access: ScrapeAccess) -> Any:
    async def scrape(request: Request) -> Response:
        if not access.allows(request.headers):  # the scrape token, or public metrics
            await authenticator.authenticate(request)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return scrape


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, surface_for_path(request.url.path))


async def _provider_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProviderError)
    return error_response(ApiError.from_provider(exc), surface_for_path(request.url.path))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"Unknown route: {request.method} {request.url.path}",
               405: f"Method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    headers = {"allow": ", ".join(allowed_methods(request))} if exc.status_code == 405 else None
    return error_response(ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None,
                                   headers=headers), surface_for_path(request.url.path))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (a path may have one route per method,
    and Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.path_regex.match(request.url.path) and route.methods:
            methods |= route.methods
    return sorted(methods)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ApiError(500, "Internal server error", code="internal_error"),
                          surface_for_path(request.url.path))
