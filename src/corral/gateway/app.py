"""The ASGI app factory. Everything is built from the config and held by one
`Gateway` object; nothing is global, so tests build as many apps as they like."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from corral.config.schema import CorralConfig
from corral.gateway.errors import ApiError, error_response, surface_for_path
from corral.gateway.middleware import CorralMiddleware
from corral.gateway.state import Gateway
from corral.llm.errors import ProviderError
from corral.llm.provider import Provider
from corral.llm.router import Router
from corral.runtime import settle_after_startup

log = logging.getLogger("corral.gateway")

# Feature modules, in install order. Each may define `install(gateway)` (attach
# interceptors, components, hooks) and/or `routes(gateway) -> list[BaseRoute]`.
MODULES = [
    "corral.gateway.health",
    "corral.gateway.openai",
    "corral.gateway.verification",
    "corral.gateway.anthropic",
    "corral.gateway.responses",
    "corral.gateway.embeddings",
    "corral.gateway.metrics",
    "corral.gateway.tracing",
    "corral.gateway.access",
    "corral.gateway.admin",
    "corral.gateway.agents",
    "corral.gateway.a2a",
    "corral.gateway.mcp_server",
]
# Modules that only serve agents and cost most of the startup time in imports (the A2A
# and MCP SDKs): loaded only when the config declares agents.
AGENT_ONLY_MODULES = frozenset({"corral.gateway.a2a", "corral.gateway.mcp_server"})


def build_providers(config: CorralConfig) -> dict[str, Provider]:
    from corral.llm.registry import build_provider

    return {name: build_provider(name, p) for name, p in config.providers.items() if p.enabled}


def build_gateway(
    config: CorralConfig,
    *,
    providers: Mapping[str, Provider] | None = None,
    notes: list[str] | None = None,
) -> Gateway:
    built = dict(providers) if providers is not None else build_providers(config)
    passthrough = frozenset(n for n, p in config.providers.items() if getattr(p, "passthrough", False))
    router = Router(config.models, built, settings=config.router, passthrough=passthrough)
    gateway = Gateway(config=config, router=router, notes=list(notes or []))
    if config.cache.url:  # replicas share cooldowns (and latency averages) through Redis
        from corral.llm.cooldowns import RedisHealth

        health = RedisHealth.from_url(router, config.cache.url, prefix=config.cache.prefix)
        gateway.components["router.health"] = health
        gateway.startup_hooks.append(health.start)
        gateway.shutdown_hooks.append(health.stop)
    return gateway


def create_app(
    config: CorralConfig,
    *,
    providers: Mapping[str, Provider] | None = None,
    notes: list[str] | None = None,
    modules: list[str] | None = None,
    server_process: bool = False,
) -> Starlette:
    """`server_process`: this process is the server (`corral serve`), not a test or an
    embedding app, so process-wide settings apply (`corral.runtime`)."""
    gateway = build_gateway(config, providers=providers, notes=notes)
    routes: list[BaseRoute] = []
    for name in modules or MODULES:
        if name in AGENT_ONLY_MODULES and not config.agents:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "install"):
            module.install(gateway)
        if hasattr(module, "routes"):
            routes.extend(module.routes(gateway))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        if server_process:
            settle_after_startup(config.server.gc_young_threshold)
        try:
            yield
        finally:
            await gateway.shutdown()

    middleware = [Middleware(CorralMiddleware, max_body_bytes=config.server.max_body_bytes)]
    if config.server.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=config.server.cors_origins,
                                     allow_methods=["*"], allow_headers=["*"]))
    app = Starlette(
        routes=routes,
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
    return error_response(ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None),
                          surface_for_path(request.url.path))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ApiError(500, "Internal server error", code="internal_error"),
                          surface_for_path(request.url.path))
