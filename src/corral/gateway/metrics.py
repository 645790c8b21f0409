"""Observability at the gateway edge: the metrics interceptor, the access log line of
every model call, and `GET /metrics` (Prometheus text format).

The interceptor is the first to admit a call, so calls that auth, limits or budgets
refuse are still counted (with their status), from the response-start hook the
middleware calls with the same overhead it publishes in ``x-corral-overhead-ms``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.gateway.state import CallRecord, Gateway
from corral.llm.errors import ProviderError
from corral.llm.pricing import PricingTable
from corral.telemetry.metrics import DeploymentHealth, GatewayMetrics

log = logging.getLogger("corral.request")

REJECTED = {401: "unauthorized", 402: "budget_exceeded", 403: "forbidden", 429: "rate_limited"}


class _Call:
    """One admitted call, until its response starts (the middleware calls
    `response_started` with the overhead it publishes)."""

    __slots__ = ("finished", "metrics", "model", "started", "surface")

    def __init__(self, metrics: GatewayMetrics, surface: str, model: str, started: float) -> None:
        self.metrics = metrics
        self.surface = surface
        self.model = model
        self.started = started
        self.finished = False

    def response_started(self, status: int, overhead_seconds: float) -> None:
        self.metrics.observe_overhead(self.surface, overhead_seconds)
        if not self.finished and status >= 400:  # refused after admit (auth, limits, budget)
            self.metrics.observe_call(surface=self.surface, model=self.model, status=status,
                                      seconds=time.perf_counter() - self.started,
                                      error_type=REJECTED.get(status, f"http_{status}"))


def error_type(record: CallRecord) -> str | None:
    error = record.error
    if error is None:
        return None
    if isinstance(error, ProviderError):
        return error.code
    if record.status == 499:
        return "client_disconnected"
    return type(error).__name__


class CallObserver:
    """Metrics (when enabled) and one access-log line per model call."""

    def __init__(self, metrics: GatewayMetrics | None, pricing: PricingTable | None = None) -> None:
        self.metrics = metrics
        self.pricing = pricing

    def cost(self, record: CallRecord) -> float | None:
        if self.pricing is None or record.usage is None:
            return None
        return self.pricing.cost(record.usage, record.model, record.ctx.upstream_model)

    async def admit(self, request: Request, model: str, surface: str) -> None:
        if self.metrics is None:
            return
        call = _Call(self.metrics, surface, model, time.perf_counter())
        # The scope's state dict itself: `request.state` wraps it in an object per request.
        state = request.scope.setdefault("state", {})
        state["corral_call"] = call
        state["observe_overhead"] = call.response_started

    async def finish(self, request: Request, record: CallRecord) -> None:
        call = request.scope.get("state", {}).get("corral_call")
        if call is not None:
            call.finished = True
        seconds = time.perf_counter() - record.started
        usage = record.usage
        tokens = (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens) \
            if usage is not None else None
        kind = error_type(record)
        if self.metrics is not None:
            self.metrics.observe_call(surface=record.surface, model=record.model, status=record.status,
                                      seconds=seconds, ttft_seconds=record.ttft_seconds, tokens=tokens,
                                      error_type=kind, cost_usd=self.cost(record))
        if not log.isEnabledFor(logging.INFO):  # the line's fields cost more than the metrics above
            return
        log.info("%s model=%s status=%s %.3fs tokens=%s/%s%s", record.surface, record.model, record.status, seconds,
                 tokens[0] if tokens else 0, tokens[1] if tokens else 0, f" error={kind}" if kind else "",
                 extra={"surface": record.surface, "model": record.model, "status": record.status,
                        "duration_s": round(seconds, 6), "stream": record.stream,
                        "deployment": record.ctx.provider, "upstream_model": record.ctx.upstream_model,
                        "attempts": record.ctx.attempts, "input_tokens": tokens[0] if tokens else None,
                        "output_tokens": tokens[1] if tokens else None, "error_type": kind})


def router_health(gateway: Gateway) -> Callable[[], list[DeploymentHealth]]:
    def read() -> list[DeploymentHealth]:
        states = getattr(gateway.router, "deployment_states", None)
        if states is None:
            return []
        now = time.monotonic()  # the router's default clock
        return [DeploymentHealth(s.alias, s.key, not s.cooling(now), max(0.0, s.cooldown_until - now))
                for s in states()]
    return read


def usage_queue_depth(gateway: Gateway) -> Callable[[], int | None]:
    """The access component's batch writer (usage and spend rows), once it has started."""
    def read() -> int | None:
        writer = getattr(gateway.components.get("access"), "writer", None)
        depth = getattr(writer, "depth", None)
        return depth if isinstance(depth, int) else None
    return read


def install(gateway: Gateway) -> None:
    metrics = GatewayMetrics() if gateway.config.observability.metrics else None
    if metrics is not None:
        metrics.deployments = router_health(gateway)
        metrics.watch_queue("usage", usage_queue_depth(gateway))
        gateway.components["metrics"] = metrics

        async def worker_exit() -> None:
            metrics.worker_exit()

        gateway.shutdown_hooks.append(worker_exit)
    pricing = gateway.components.get("pricing")
    if not isinstance(pricing, PricingTable):
        pricing = PricingTable(gateway.config.pricing) if metrics is not None else None
    gateway.interceptors.insert(0, CallObserver(metrics, pricing))


def routes(gateway: Gateway) -> list[BaseRoute]:
    metrics = gateway.components.get("metrics")
    if not isinstance(metrics, GatewayMetrics):
        return []

    async def scrape(request: Request) -> Response:
        await gateway.guard(request)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return [Route("/metrics", scrape, methods=["GET"])]
