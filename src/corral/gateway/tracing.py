"""One OpenTelemetry span per model call, with the GenAI semantic conventions, joined
to the caller's trace when it sent a ``traceparent`` header."""

from __future__ import annotations

import time

from starlette.requests import Request

from corral.gateway.metrics import error_type
from corral.gateway.state import CallRecord, Gateway
from corral.telemetry.tracing import CallSpan, Tracing, build_tracing


class TracingInterceptor:
    def __init__(self, tracing: Tracing, gateway: Gateway) -> None:
        self.tracing = tracing
        self.gateway = gateway

    async def admit(self, request: Request, model: str, surface: str) -> None:
        return None

    async def finish(self, request: Request, record: CallRecord) -> None:
        end_ns = time.time_ns()
        start_ns = end_ns - int((time.perf_counter() - record.started) * 1e9)
        ctx = record.ctx
        provider = self.gateway.config.providers.get(ctx.provider) if ctx.provider else None
        usage = record.usage
        call = CallSpan(
            operation="embeddings" if record.surface == "embeddings" else "chat",
            request_model=record.model, start_ns=start_ns, end_ns=end_ns,
            response_model=ctx.upstream_model, provider=provider.type if provider else None,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            error_type=error_type(record),
            attributes={"corral.surface": record.surface, "corral.request_id": record.request_id,
                        "corral.deployment": ctx.provider or "", "corral.attempts": ctx.attempts,
                        "corral.stream": record.stream, "http.response.status_code": record.status},
        )
        self.tracing.record(call, self.tracing.parent(request.headers))


def install(gateway: Gateway) -> None:
    tracing = build_tracing(gateway.config.observability.tracing)
    if tracing is None:
        return
    gateway.components["tracing"] = tracing
    gateway.interceptors.append(TracingInterceptor(tracing, gateway))
    gateway.shutdown_hooks.append(tracing.shutdown)
