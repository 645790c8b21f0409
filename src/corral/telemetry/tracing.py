"""OpenTelemetry traces with the GenAI semantic conventions.

Each app owns its `TracerProvider` (never installed as the global one), so tests and
embedding applications keep their own. The OTLP exporter is the optional ``otlp``
extra and is imported only when configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from corral.config.schema import TracingConfig

# gen_ai.provider.name well-known values; anything else is reported as configured.
PROVIDER_NAMES = {"gemini": "gcp.gemini", "vertex": "gcp.vertex_ai", "mistral": "mistral_ai", "xai": "x_ai",
                  "bedrock": "aws.bedrock", "azure": "azure.ai.openai"}


@dataclass(frozen=True, slots=True)
class CallSpan:
    """What one model call reports to a trace (the gateway fills it from its call record)."""

    operation: str  # "chat" | "embeddings"
    request_model: str
    start_ns: int
    end_ns: int
    response_model: str | None = None
    provider: str | None = None  # provider type, e.g. "openai", "anthropic"
    input_tokens: int | None = None
    output_tokens: int | None = None
    error_type: str | None = None
    attributes: Mapping[str, str | int | float | bool] | None = None


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("corral")
        self._propagator = TraceContextTextMapPropagator()

    def parent(self, headers: Mapping[str, str]) -> Context:
        """The caller's trace (W3C ``traceparent``), so our span joins it."""
        return self._propagator.extract(carrier=dict(headers))

    def record(self, call: CallSpan, parent: Context | None = None) -> None:
        span = self.tracer.start_span(f"{call.operation} {call.request_model}", context=parent,
                                      kind=SpanKind.CLIENT, start_time=call.start_ns)
        span.set_attribute("gen_ai.operation.name", call.operation)
        span.set_attribute("gen_ai.request.model", call.request_model)
        if call.response_model:
            span.set_attribute("gen_ai.response.model", call.response_model)
        if call.provider:
            span.set_attribute("gen_ai.provider.name", PROVIDER_NAMES.get(call.provider, call.provider))
        if call.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", call.input_tokens)
        if call.output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", call.output_tokens)
        for key, value in (call.attributes or {}).items():
            span.set_attribute(key, value)
        if call.error_type:
            span.set_attribute("error.type", call.error_type)
            span.set_status(Status(StatusCode.ERROR, call.error_type))
        span.end(end_time=call.end_ns)

    async def shutdown(self) -> None:
        import anyio

        # Flushing exports over the network: off the event loop, which is still serving.
        await anyio.to_thread.run_sync(self.provider.shutdown)


def otlp_exporter(endpoint: str | None) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        raise RuntimeError("observability.tracing.exporter is 'otlp' but the OTLP exporter is not installed: "
                           "pip install 'corral[otlp]'") from None
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    return exporter


def build_tracing(config: TracingConfig, *, exporter: SpanExporter | None = None) -> Tracing | None:
    """None when tracing is off. ``exporter`` overrides the configured one (tests)."""
    if not config.enabled:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    if exporter is None and config.exporter == "otlp":
        exporter = otlp_exporter(config.endpoint)
    elif exporter is None and config.exporter == "console":
        exporter = ConsoleSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)
