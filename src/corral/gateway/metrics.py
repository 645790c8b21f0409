"""Observability at the gateway edge: the metrics and the access-log line of every
model call, and `GET /metrics` (Prometheus text format).

The pipeline tells the observer when a call's response starts (with the overhead the
middleware publishes in ``x-corral-overhead-ms``) and when the call is over. A call
refused after it was opened (auth, limits, budget) is counted at its response start,
with its status, so refusals show in the same series as answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from corral.gateway.call import Call
from corral.llm.errors import ProviderError
from corral.llm.router import Router
from corral.store import BatchWriter
from corral.telemetry.access_log import AccessLog
from corral.telemetry.metrics import DeploymentHealth, GatewayMetrics

REJECTED = {401: "unauthorized", 402: "budget_exceeded", 403: "forbidden", 429: "rate_limited"}


def error_type(call: Call) -> str | None:
    error = call.error
    if error is None:
        return None
    if isinstance(error, ProviderError):
        return error.code
    if call.status == 499:
        return "client_disconnected"
    return type(error).__name__


class CallObserver:
    """Metrics (when enabled) and one access-log line per model call."""

    def __init__(self, metrics: GatewayMetrics | None, access_log: AccessLog) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def response_started(self, call: Call, status: int, overhead_seconds: float) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        metrics.observe_overhead(call.surface, overhead_seconds)
        if not call.finished and status >= 400:  # refused after it was opened (auth, limits, budget)
            metrics.observe_call(surface=call.surface, model=call.model, status=status,
                                 seconds=time.perf_counter() - call.started,
                                 error_type=REJECTED.get(status, f"http_{status}"))

    def count_rejection(self, which: str) -> None:
        if self.metrics is not None:
            scope, _, limit = which.rpartition("_") if which != "budget" else ("key", "", "budget")
            self.metrics.limit_rejections.labels(limit=limit, scope=scope).inc()

    def finished(self, call: Call) -> None:
        call.finished = True
        seconds = time.perf_counter() - call.started
        usage = call.usage
        tokens = (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens) \
            if usage is not None else None
        kind = error_type(call)
        if self.metrics is not None:
            self.metrics.observe_call(surface=call.surface, model=call.model, status=call.status,
                                      seconds=seconds, ttft_seconds=call.ttft_seconds, tokens=tokens,
                                      error_type=kind, cost_usd=call.cost_usd)
        self.access_log.record(surface=call.surface, model=call.model, status=call.status, duration_s=seconds,
                               stream=call.stream, deployment=call.ctx.provider,
                               upstream_model=call.ctx.upstream_model, attempts=call.ctx.attempts,
                               input_tokens=tokens[0] if tokens else None,
                               output_tokens=tokens[1] if tokens else None, error_type=kind,
                               request_id=call.request_id)


def router_health(router: Router) -> Callable[[], list[DeploymentHealth]]:
    def read() -> list[DeploymentHealth]:
        now = time.monotonic()  # the router's default clock
        return [DeploymentHealth(s.alias, s.key, not s.cooling(now), max(0.0, s.cooldown_until - now))
                for s in router.deployment_states()]
    return read


def queue_depth(writer: BatchWriter[Any]) -> Callable[[], int | None]:
    return lambda: writer.depth
