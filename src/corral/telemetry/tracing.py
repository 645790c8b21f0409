"""OpenTelemetry traces with the GenAI semantic conventions.

Each app owns its `Tracing` (never installed as the global tracer provider), built once
from the config by `build_tracing` and handed to the components that make spans (the
router, the agent runner and service) through their constructors. Parents travel
explicitly: a span's children are started with ``parent=span_context(span)``; nothing
reads a "current span" from a context variable.

What a trace of an agent run looks like (names per the conventions):

    invoke_agent <agent>            (gen_ai.conversation.id = the session)
      chat <model alias>            (one per model call; retries and fallbacks as events)
      execute_tool <tool>           (one per tool call)
        invoke_agent <sub-agent>    (an agent used as a tool)
          chat <model alias>

Sampling is parent-based: a caller's ``traceparent`` decides; a new trace is kept with
probability ``sampling_rate``. A span that was sampled out costs one object and no
attribute work (callers check `Span.is_recording` before building content).

The OTLP/HTTP exporter is the optional ``otlp`` extra and is imported only when used.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from corral.config.schema import TracingConfig
from corral.telemetry.logging import redact

# gen_ai.provider.name well-known values; anything else is reported as configured.
PROVIDER_NAMES = {"gemini": "gcp.gemini", "vertex": "gcp.vertex_ai", "mistral": "mistral_ai", "xai": "x_ai",
                  "bedrock": "aws.bedrock", "azure": "azure.ai.openai"}
LANGFUSE_CLOUD = "https://cloud.langfuse.com"
LANGFUSE_PATH = "/api/public/otel/v1/traces"

Attribute = str | int | float | bool


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
    attributes: Mapping[str, Attribute] | None = None


def span_context(span: Span) -> Context:
    """The context a child of ``span`` is started in."""
    return trace.set_span_in_context(span)


def fail(span: Span, error_type: str, message: str | None = None) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message or error_type))


class Tracing:
    """The app's tracer, and the rules of what goes on a span.

    ``capture_content``: prompts, completions, tool arguments and results are recorded
    (as the conventions' ``gen_ai.input.messages`` etc.) only when it is true, and always
    through `content`, which redacts secrets the way the logs do."""

    def __init__(self, provider: TracerProvider, *, capture_content: bool = False,
                 redactor: Callable[[str], str] = redact) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("corral")
        self.capture_content = capture_content
        self._redact = redactor
        self._propagator = TraceContextTextMapPropagator()

    # ---- propagation --------------------------------------------------------

    def parent(self, headers: Mapping[str, str]) -> Context:
        """The caller's trace (W3C ``traceparent``/``tracestate``), so our spans join it."""
        return self._propagator.extract(carrier=dict(headers))

    def carrier(self, context: Context | None) -> dict[str, str]:
        """W3C headers for ``context`` (empty when there is no sampled-or-not span in it):
        sent to remote agents and MCP servers, and kept with a queued run so it resumes in
        the trace that started it."""
        headers: dict[str, str] = {}
        if context is not None:
            self._propagator.inject(headers, context=context)
        return headers

    # ---- spans ---------------------------------------------------------------

    def start(self, name: str, *, parent: Context | None, kind: SpanKind = SpanKind.INTERNAL,
              attributes: Mapping[str, Attribute] | None = None) -> Span:
        # An empty Context (not None) as the parent: a root span never picks up a current
        # span some other library left in the ambient context.
        return self.tracer.start_span(name, context=parent if parent is not None else Context(), kind=kind,
                                      attributes=attributes)

    def content(self, value: Any) -> str:
        """``value`` as JSON (strings as they are), redacted: the only way content reaches a span."""
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        return self._redact(text)

    def record(self, call: CallSpan, parent: Context | None = None) -> None:
        """A finished model call as one span (the gateway's per-request span)."""
        span = self.tracer.start_span(f"{call.operation} {call.request_model}",
                                      context=parent if parent is not None else Context(),
                                      kind=SpanKind.CLIENT, start_time=call.start_ns)
        if not span.is_recording():  # sampled out: nothing to fill in
            span.end(end_time=call.end_ns)
            return
        span.set_attribute("gen_ai.operation.name", call.operation)
        span.set_attribute("gen_ai.request.model", call.request_model)
        if call.response_model:
            span.set_attribute("gen_ai.response.model", call.response_model)
        if call.provider:
            span.set_attribute("gen_ai.provider.name", provider_name(call.provider))
        if call.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", call.input_tokens)
        if call.output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", call.output_tokens)
        for key, value in (call.attributes or {}).items():
            span.set_attribute(key, value)
        if call.error_type:
            fail(span, call.error_type)
        span.end(end_time=call.end_ns)

    def force_flush(self, timeout_millis: int = 5000) -> bool:
        return self.provider.force_flush(timeout_millis)

    async def shutdown(self) -> None:
        import anyio

        # Flushing exports over the network: off the event loop, which is still serving.
        await anyio.to_thread.run_sync(self.provider.shutdown)


def provider_name(provider_type: str) -> str:
    return PROVIDER_NAMES.get(provider_type, provider_type)


def otlp_exporter(endpoint: str | None, headers: Mapping[str, str] | None = None) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        raise RuntimeError("observability.tracing.exporter is 'otlp' but the OTLP exporter is not installed: "
                           "pip install 'corral[otlp]'") from None
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    extra = dict(headers or {})
    if endpoint:
        exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint, headers=extra or None)
    else:  # OTEL_EXPORTER_OTLP_* from the environment, as the SDK reads them
        exporter = OTLPSpanExporter(headers=extra or None)
    return exporter


@dataclass(frozen=True, slots=True)
class Destination:
    endpoint: str | None
    headers: dict[str, str]


def destination(config: TracingConfig, environ: Mapping[str, str]) -> Destination:
    """Where OTLP spans go: the configured endpoint, else Langfuse when its keys are set
    (config ``langfuse:`` first, then LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY / LANGFUSE_HOST)."""
    headers = {name: value.get_secret_value() for name, value in config.headers.items()}
    lf = config.langfuse
    public = (lf.public_key if lf else None) or environ.get("LANGFUSE_PUBLIC_KEY")
    secret = (lf.secret_key.get_secret_value() if lf and lf.secret_key else None) or environ.get("LANGFUSE_SECRET_KEY")
    if config.endpoint or not (public or secret or lf):
        return Destination(config.endpoint, headers)
    if not (public and secret):
        raise ValueError("observability.tracing.langfuse needs both a public and a secret key "
                         "(or LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY)")
    host = (lf.host if lf else None) or environ.get("LANGFUSE_HOST") or LANGFUSE_CLOUD
    token = base64.b64encode(f"{public}:{secret}".encode()).decode()
    headers.setdefault("Authorization", f"Basic {token}")
    return Destination(host.rstrip("/") + LANGFUSE_PATH, headers)


def build_tracing(config: TracingConfig, *, exporter: SpanExporter | None = None,
                  environ: Mapping[str, str] | None = None) -> Tracing | None:
    """None when tracing is off. ``exporter`` overrides the configured one (tests)."""
    if not config.enabled:
        return None
    sampler = ParentBased(TraceIdRatioBased(config.sampling_rate))
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}), sampler=sampler)
    if exporter is None and config.exporter == "otlp":
        where = destination(config, os.environ if environ is None else environ)
        exporter = otlp_exporter(where.endpoint, where.headers)
    elif exporter is None and config.exporter == "console":
        exporter = ConsoleSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, capture_content=config.capture_content)
