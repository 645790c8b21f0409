"""The ASGI app factory: every gateway component built explicitly, in order, from the
config alone, each given its dependencies; then the routes and middleware, declared in
one list each. Nothing is global, so tests build as many apps as they like.

The path of a model call through these parts is `corral.gateway.pipeline`; the
picture is docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.agents.registry import AgentRegistry
from corral.config.schema import CorralConfig
from corral.console.gateway import GatewayConsole
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
from corral.gateway.reload import ConfigReloader, ConfigSource, ReloadStatus, hash_config
from corral.gateway.responses import ResponsesApi
from corral.gateway.runs import RunsApi
from corral.gateway.serving import (
    Handlers,
    McpRoute,
    PinServing,
    Serving,
    a2a,
    guarded,
    knowledge_route,
    per_config,
    serving_of,
)
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

log = logging.getLogger("corral.gateway")

# Response headers a browser client may read across origins (with `server.cors_origins`).
EXPOSED_HEADERS = ["x-request-id", "request-id", "x-corral-overhead-ms", "retry-after"]


@dataclass(eq=False)
class Shared:
    """The long-lived parts: built once, kept across config reloads (each `Serving` is
    built over them), closed at shutdown."""

    store: Store
    writer: BatchWriter[BatchRecord]  # usage and audit rows, written in batches
    spool: UsageSpool | None  # usage rows on local disk until they are stored (crash-safe)
    metrics: GatewayMetrics | None
    access_log: AccessLog  # one line per model call, written in batches off the request path
    tracing: Tracing | None
    observer: CallObserver
    agent_metrics: AgentMetrics | None
    key_cache: KeyCache
    limiter: Limiter  # its counters (in memory or Redis) outlive reloads; `configure` sets new limits
    budgets: BudgetSeeder
    budget_alerts: BudgetAlerts | None  # `billing.alerts` (not live)
    throttle: FailedAuthThrottle  # failed-auth delays (`auth.throttle`, not live)
    keys: KeySync
    drain: Drain  # streams cut cleanly at the shutdown timeout
    providers: Mapping[str, Provider] | None  # handed in by tests: every version shares them
    boot_summary: dict[str, Any] | None
    # The knowledge bases (`knowledge:`, not live: their stores are opened once), on a router
    # of their own that lives as long as they do.
    knowledge: KnowledgeService | None = None
    knowledge_router: Router | None = None


@dataclass(eq=False)
class Gateway:
    """Every part `build_gateway` made, by name and type (``app.state.gateway``).

    ``current`` is what new requests are served by; a config reload (`apply`) replaces it
    in one assignment, and the version it replaced is closed once its requests and runs
    are over (`corral.gateway.serving`)."""

    current: Serving
    shared: Shared
    readiness: Readiness
    reload: ReloadStatus
    started_at: float
    reloader: ConfigReloader | None = None  # `corral serve --watch` / SIGHUP
    # The A2A and MCP routes exist when the config the app started with has agents (MCP:
    # or knowledge); a reload that adds the first agent needs a restart for them.
    a2a_routes: bool = False
    mcp_routes: bool = False
    retiring: set[asyncio.Task[None]] = field(default_factory=set)

    # The parts most often reached from outside (tests, embedding apps), by name.
    @property
    def config(self) -> CorralConfig:
        return self.current.config

    @property
    def router(self) -> Router:
        return self.current.router

    @property
    def pipeline(self) -> CallPipeline:
        return self.current.pipeline

    @property
    def agents(self) -> AgentRuntime:
        return self.current.agents

    @property
    def authenticator(self) -> Authenticator:
        return self.current.authenticator

    @property
    def models(self) -> Models:
        return self.current.models

    @property
    def verification(self) -> Verification:
        return self.current.verification

    @property
    def router_health(self) -> RedisHealth | None:
        return self.current.router_health

    @property
    def limiter(self) -> Limiter:
        return self.shared.limiter

    @property
    def store(self) -> Store:
        return self.shared.store

    @property
    def writer(self) -> BatchWriter[BatchRecord]:
        return self.shared.writer

    @property
    def spool(self) -> UsageSpool | None:
        return self.shared.spool

    @property
    def knowledge(self) -> KnowledgeService | None:
        return self.shared.knowledge

    @property
    def billing(self) -> Billing:
        return self.current.billing

    @property
    def metrics(self) -> GatewayMetrics | None:
        return self.shared.metrics

    @property
    def tracing(self) -> Tracing | None:
        return self.shared.tracing

    async def start(self) -> None:
        """Start the parts in dependency order; `stop` stops them in reverse."""
        shared, config = self.shared, self.current.config
        if config.server.workers > 1 and not config.cache.url:
            counters = shared.limiter.counters
            if isinstance(counters, SharedFileCounters):
                log.warning("limits and budgets are shared by this machine's %d workers through %s; with more "
                            "than one machine set cache.url (Redis) to share them", config.server.workers,
                            counters.path)
            else:
                log.warning("limits and budgets are counted per worker process; set cache.url (Redis) to share them")
        await shared.access_log.start()
        if shared.metrics is not None:
            await shared.metrics.start()
            shared.metrics.config_loaded(self.current.config_hash)
        await shared.store.migrate()
        if shared.spool is not None:  # rows a crashed process left: stored before budgets are seeded
            await shared.spool.replay(shared.store.usage.insert_many)
            shared.spool.start()
        await shared.keys.start()  # the key cache loaded and the budget counters seeded from the store
        shared.writer.start()
        if shared.budget_alerts is not None:
            shared.budget_alerts.start()
        if shared.knowledge is not None:
            for note in shared.knowledge.notes():  # e.g. a base without an embedder searches by keyword alone
                log.info("knowledge: %s", note)
        await self.current.start()
        if self.reloader is not None:
            await self.reloader.start()
        self.readiness.ready = True

    async def apply(self, config: CorralConfig, config_hash: str) -> None:
        """Serve new requests with ``config`` (already validated; raises, keeping the
        current version, when it cannot be built or started). Requests and runs in flight
        finish on the version they started with, which is closed after them (within
        ``server.shutdown_timeout``)."""
        serving = build_serving(config, config_hash, self.shared)
        try:
            await serving.start()
        except BaseException:
            await serving.stop()
            raise
        if (serving.handlers.a2a is not None and not self.a2a_routes) or (serving.mcp is not None
                                                                          and not self.mcp_routes):
            log.warning("config: the A2A and MCP routes of the agents need a restart (this process started "
                        "without agents); their runs, chat and REST routes are served now")
        old = self.current
        configure_limiter(self.shared.limiter, config)
        self.current = serving
        task = asyncio.create_task(old.retire(config.server.shutdown_timeout), name=f"retire-config-{old.config_hash}")
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def stop(self) -> None:
        shared = self.shared
        self.readiness.ready = False
        if self.reloader is not None:
            await self.reloader.stop()
        for task in list(self.retiring):  # older versions still draining: closed now
            task.cancel()
        await asyncio.gather(*self.retiring, return_exceptions=True)
        await self.current.stop()
        if shared.knowledge is not None:
            await shared.knowledge.aclose()
        if shared.knowledge_router is not None:
            await shared.knowledge_router.aclose()
        await shared.keys.stop()
        await shared.writer.aclose()
        if shared.budget_alerts is not None:
            await shared.budget_alerts.stop()
        if shared.spool is not None:
            shared.spool.close()
        await shared.limiter.aclose()
        if shared.tracing is not None:
            await shared.tracing.shutdown()
        await shared.access_log.stop()  # the lines still buffered are written
        if shared.metrics is not None:
            await shared.metrics.stop()
        if shared.providers is not None:
            for provider in shared.providers.values():
                await provider.aclose()
        await shared.store.aclose()


def build_gateway(
    config: CorralConfig,
    *,
    providers: Mapping[str, Provider] | None = None,
    boot_summary: dict[str, Any] | None = None,
    config_hash: str | None = None,
    shared_counters: str | None = None,
) -> Gateway:
    """``config_hash``: the hash of the files the config was loaded from
    (`corral.gateway.reload.config_hash`); by default, of the config itself."""
    store = Store.connect(config.database.url, pool_size=config.database.pool_size, pooler=config.database.pooler)
    spool = build_spool(config)  # usage rows durable on this machine before a call's last byte
    writer: BatchWriter[BatchRecord] = BatchWriter(store.write_batch, journal=spool)
    metrics = GatewayMetrics() if config.observability.metrics else None
    tracing = build_tracing(config.observability.tracing)
    access_log = AccessLog(enabled=config.observability.access_log)
    key_cache = KeyCache(store)
    redis = _redis(config.cache.url)
    limiter = build_limiter(config, redis, StoredSpend(store), shared_counters)
    budgets = BudgetSeeder(limiter, store)
    alerts = config.billing.alerts
    limits = config.auth.throttle
    shared = Shared(
        store=store, writer=writer, spool=spool, metrics=metrics, access_log=access_log, tracing=tracing,
        observer=CallObserver(metrics, access_log),
        agent_metrics=AgentMetrics(metrics.registry) if metrics is not None else None,
        key_cache=key_cache, limiter=limiter, budgets=budgets,
        budget_alerts=BudgetAlerts(Alerter(list(alerts.routes)), alerts.thresholds) if alerts.routes else None,
        throttle=FailedAuthThrottle(limit=limits.limit, window_seconds=limits.window_seconds,
                                    base_delay=limits.base_delay, max_delay=max(limits.max_delay, limits.base_delay),
                                    observer=AuthFailureCounter(metrics.registry) if metrics is not None else None),
        keys=KeySync(key_cache, budgets, redis=redis, channel=f"{config.cache.prefix}keys"),
        drain=Drain(config.server.shutdown_timeout),
        providers=providers, boot_summary=boot_summary,
    )
    gateway: Gateway | None = None
    if config.knowledge:
        pricing = PricingTable(config.pricing)
        shared.knowledge_router = build_router(config, providers, tracing, pricing)

        def charge_embedding(*args: Any, **kwargs: Any) -> Any:  # billed by the version serving now
            assert gateway is not None
            return gateway.current.billing.charge_embedding(*args, **kwargs)

        shared.knowledge = KnowledgeService.from_config(config.knowledge, root=Path.cwd(), data_dir=data_dir(),
                                                        router=shared.knowledge_router, on_usage=charge_embedding)
    current = build_serving(config, config_hash or hash_config(config), shared)
    gateway = Gateway(current=current, shared=shared, readiness=Readiness(),
                      reload=ReloadStatus(current.config_hash), started_at=time.time(),
                      a2a_routes=current.handlers.a2a is not None, mcp_routes=current.mcp is not None)
    if metrics is not None:
        live = gateway
        metrics.deployments = lambda: router_health(live.current.router)()
        metrics.watch_queue("usage", queue_depth(writer))
    return gateway


def build_serving(config: CorralConfig, config_hash: str, shared: Shared) -> Serving:
    """Every part a request reads that depends on the config, built over the long-lived ones."""
    pricing = PricingTable(config.pricing)
    router = build_router(config, shared.providers, shared.tracing, pricing)
    authenticator = build_authenticator(config, shared.key_cache, shared.throttle)
    billing = Billing(shared.limiter, pricing, shared.key_cache, shared.writer, router,
                      default_max_tokens=config.billing.default_max_tokens, alerts=shared.budget_alerts,
                      agent_metrics=shared.agent_metrics)
    access = Access(authenticator, shared.limiter, shared.budgets, shared.observer.count_rejection,
                    max_cost=billing.max_cost)

    knowledge = shared.knowledge
    registry = AgentRegistry.from_config(config, knowledge=knowledge)
    agents = AgentRuntime(config, registry, router, shared.store, meter=billing.charge_run_call,
                          observer=shared.agent_metrics, tracing=shared.tracing)
    models = Models(router, AgentChatTargets(agents), default_model=config.default_model)
    tracer = CallTracer(shared.tracing) if shared.tracing is not None else None
    pipeline = CallPipeline(models, access, pricing, shared.observer, billing, tracer, shared.drain)
    verification = Verification(config, router, boot_summary=shared.boot_summary)
    health = RedisHealth.from_url(router, config.cache.url, prefix=config.cache.prefix) if config.cache.url else None

    a2a = mcp = None
    if config.agents:  # the A2A SDK costs most of the startup time in imports: only with agents
        from corral.gateway.a2a import A2AApi

        a2a = A2AApi(agents, pipeline, auth_required=authenticator.required)
    if config.agents or knowledge is not None:
        from corral.gateway.mcp_server import McpEndpoint  # the MCP SDK: only with agents or knowledge

        mcp = McpEndpoint(agents, pipeline, knowledge)
    handlers = Handlers(
        chat=ChatCompletionsApi(pipeline),
        model_list=ModelsApi(pipeline, models, int(time.time())),
        messages=MessagesApi(pipeline, models),
        responses=ResponsesApi(pipeline),
        embeddings=EmbeddingsApi(pipeline, router),
        verification=VerificationApi(verification, authenticator),
        admin=AdminApi(authenticator, shared.store, shared.limiter, shared.keys, shared.budgets, shared.writer),
        runs=RunsApi(agents, pipeline),
        a2a=a2a,
        knowledge=KnowledgeRoutes(knowledge, knowledge_access(authenticator)) if knowledge is not None else None,
    )
    return Serving(
        config=config, config_hash=config_hash, router=router, pricing=pricing, authenticator=authenticator,
        access=access, billing=billing, agents=agents, models=models, pipeline=pipeline,
        verification=verification, router_health=health, handlers=handlers, mcp=mcp,
        owns_providers=shared.providers is None,
    )


def create_app(
    config: CorralConfig,
    *,
    providers: Mapping[str, Provider] | None = None,
    notes: list[str] | None = None,
    boot_summary: dict[str, Any] | None = None,
    server_process: bool = False,
    source: ConfigSource | None = None,
    config_hash: str | None = None,
    config_files: list[Path] | None = None,
    shared_counters: str | None = None,
) -> Starlette:
    """`providers` replaces the configured ones (tests); `boot_summary` is what `corral up`
    found (shown by `/v1/startup/verification`); `server_process`: this process is the
    server (`corral serve`), not a test or an embedding app, so process-wide settings
    apply (`corral.process`) and SIGHUP reloads the config; `source`: where the config
    was loaded from, to reload it, and ``config_files`` the files it was read from
    (`corral.gateway.reload.watched_files`: `--watch` watches them)."""
    gateway = build_gateway(config, providers=providers, boot_summary=boot_summary, config_hash=config_hash,
                            shared_counters=shared_counters)
    if source is not None:
        gateway.reloader = ConfigReloader(gateway, source, current=config, status=gateway.reload,
                                          metrics=gateway.shared.metrics, sighup=server_process,
                                          watched=config_files or [])

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        restore_signals = None
        if server_process:
            settle_after_startup(config.server.gc_young_threshold)
            # streams are ended cleanly at the shutdown timeout
            restore_signals = gateway.shared.drain.install_signals(asyncio.get_running_loop())
        try:
            yield
        finally:
            if restore_signals is not None:
                restore_signals()
            await gateway.stop()

    # Not live (a reload names them as needing a restart): the body limit and CORS.
    middleware = [Middleware(CorralMiddleware, max_body_bytes=config.server.max_body_bytes,
                             on_response_start=gateway.shared.observer.response_started)]
    if config.server.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=config.server.cors_origins,
                                     allow_methods=["*"], allow_headers=["*"], expose_headers=EXPOSED_HEADERS))
    middleware.append(Middleware(PinServing, source=gateway))
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
    """Every route the gateway serves. The handlers of the request's own config version
    (`Serving.handlers`, pinned by `PinServing`) serve it: a reload changes what they
    are, not this list."""
    config = gateway.config
    health = HealthApi(gateway.readiness, gateway.reload)
    on = per_config
    routes: list[BaseRoute] = [
        Route("/health", health.health, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/v1/chat/completions", on(lambda s: s.handlers.chat.create), methods=["POST"]),
        Route("/v1/models", on(lambda s: s.handlers.model_list.list), methods=["GET"]),
        Route("/v1/models/{model:path}", on(lambda s: s.handlers.model_list.get), methods=["GET"]),
        Route("/v1/messages", on(lambda s: s.handlers.messages.create), methods=["POST"]),
        Route("/v1/messages/count_tokens", on(lambda s: s.handlers.messages.count_tokens), methods=["POST"]),
        Route("/v1/responses", on(lambda s: s.handlers.responses.create), methods=["POST"]),
        Route("/v1/embeddings", on(lambda s: s.handlers.embeddings.create), methods=["POST"]),
        Route("/v1/startup/verification", on(lambda s: s.handlers.verification.report), methods=["GET"]),
        Route("/admin/keys", guarded(lambda a: a.create_key), methods=["POST"]),
        Route("/admin/keys", guarded(lambda a: a.list_keys), methods=["GET"]),
        Route("/admin/keys/{key_id}", guarded(lambda a: a.get_key), methods=["GET"]),
        Route("/admin/keys/{key_id}", guarded(lambda a: a.update_key), methods=["PATCH"]),
        Route("/admin/keys/{key_id}", guarded(lambda a: a.revoke_key), methods=["DELETE"]),
        Route("/admin/keys/{key_id}/revoke", guarded(lambda a: a.revoke_key), methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", guarded(lambda a: a.rotate_key), methods=["POST"]),
        Route("/admin/teams", guarded(lambda a: a.create_team), methods=["POST"]),
        Route("/admin/teams", guarded(lambda a: a.list_teams), methods=["GET"]),
        Route("/admin/spend", guarded(lambda a: a.spend), methods=["GET"]),
        Route("/v1/agents", on(lambda s: s.handlers.runs.list_agents), methods=["GET"]),
        Route("/v1/agents/{name}/runs", on(lambda s: s.handlers.runs.create_run), methods=["POST"]),
        Route("/v1/runs/{run_id}", on(lambda s: s.handlers.runs.get_run), methods=["GET"]),
        Route("/v1/runs/{run_id}/events", on(lambda s: s.handlers.runs.run_events), methods=["GET"]),
        Route("/v1/runs/{run_id}/cancel", on(lambda s: s.handlers.runs.cancel_run), methods=["POST"]),
        Route("/v1/runs/{run_id}/approve", on(lambda s: s.handlers.runs.approve_run), methods=["POST"]),
        Route("/v1/sessions", on(lambda s: s.handlers.runs.list_sessions), methods=["GET"]),
        Route("/v1/sessions/{session_id}", on(lambda s: s.handlers.runs.get_session), methods=["GET"]),
        Route("/v1/sessions/{session_id}", on(lambda s: s.handlers.runs.delete_session), methods=["DELETE"]),
        *GatewayConsole(gateway).routes(),  # the web console at /ui/ (docs/console.md)
    ]
    if gateway.a2a_routes:  # unknown routes (404) after a reload that removes every agent
        routes += [
            Route("/.well-known/agent-card.json", a2a(lambda a: a.card), methods=["GET"]),
            Route("/.well-known/agent.json", a2a(lambda a: a.card), methods=["GET"]),  # the pre-0.3 path
            Route("/a2a/{name}/.well-known/agent-card.json", a2a(lambda a: a.card), methods=["GET"]),
            Route("/a2a/{name}", a2a(lambda a: a.rpc), methods=["POST"]),
        ]
    if gateway.mcp_routes:
        routes += [Route("/mcp", McpRoute(), methods=["GET", "POST", "DELETE"]),
                   Route("/mcp/", McpRoute(), methods=["GET", "POST", "DELETE"])]
    if gateway.shared.knowledge is not None:  # `knowledge:` needs a restart: these routes are fixed
        routes += [
            Route("/v1/knowledge", knowledge_route(lambda k: k.list_bases), methods=["GET"]),
            Route("/v1/knowledge/{name}/query", knowledge_route(lambda k: k.query), methods=["POST"]),
            Route("/v1/knowledge/{name}/documents", knowledge_route(lambda k: k.add_documents), methods=["POST"]),
            Route("/v1/knowledge/{name}/documents", knowledge_route(lambda k: k.remove_documents),
                  methods=["DELETE"]),
        ]
    if gateway.shared.metrics is not None:
        scrape = _scrape(gateway.shared.metrics, ScrapeAccess(config.observability))
        routes.append(Route("/metrics", scrape, methods=["GET"]))
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


def build_authenticator(config: CorralConfig, keys: KeyCache, throttle: FailedAuthThrottle) -> Authenticator:
    master = config.auth.master_key.get_secret_value() if config.auth.master_key else None
    jwt = None
    if config.auth.jwt is not None:
        from corral.gateway.auth_jwt import JWTVerifier  # PyJWT + cryptography: only when used

        jwt = JWTVerifier(config.auth.jwt)
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
    limiter = Limiter(counters, stored_spend=stored_spend)
    configure_limiter(limiter, config)
    return limiter


def configure_limiter(limiter: Limiter, config: CorralConfig) -> None:
    """The config's model and JWT caller limits, on the limiter whose counters outlive reloads."""
    model_limits = {name: (m.rpm, m.tpm) for name, m in config.models.items() if m.rpm or m.tpm}
    jwt = config.auth.jwt
    limiter.configure(model_limits=model_limits, subject_limits=jwt.limits if jwt else None,
                      team_limits=jwt.team_limits if jwt else None)


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


def _scrape(metrics: GatewayMetrics, access: ScrapeAccess) -> Any:
    async def scrape(request: Request) -> Response:
        if not access.allows(request.headers):  # the scrape token, or public metrics
            await serving_of(request).authenticator.authenticate(request)
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
