"""One OpenTelemetry span per model call, with the GenAI semantic conventions, joined
to the caller's trace when it sent a ``traceparent`` header."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from corral.config.schema import ProviderConfig
from corral.gateway.call import Call
from corral.gateway.metrics import error_type
from corral.telemetry.tracing import CallSpan, Tracing


class CallTracer:
    def __init__(self, tracing: Tracing, providers: dict[str, ProviderConfig]) -> None:
        self.tracing = tracing
        self.providers = providers

    def parent(self, request: Request) -> Any:
        return self.tracing.parent(request.headers)

    def record(self, call: Call) -> None:
        end_ns = time.time_ns()
        start_ns = end_ns - int((time.perf_counter() - call.started) * 1e9)
        ctx = call.ctx
        provider = self.providers.get(ctx.provider) if ctx.provider else None
        usage = call.usage
        span = CallSpan(
            operation="embeddings" if call.surface == "embeddings" else "chat",
            request_model=call.model, start_ns=start_ns, end_ns=end_ns,
            response_model=ctx.upstream_model, provider=provider.type if provider else None,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            error_type=error_type(call),
            attributes={"corral.surface": call.surface, "corral.request_id": call.request_id,
                        "corral.deployment": ctx.provider or "", "corral.attempts": ctx.attempts,
                        "corral.stream": call.stream, "http.response.status_code": call.status},
        )
        self.tracing.record(span, call.trace_parent)
