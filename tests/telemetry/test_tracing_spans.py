"""One span per model call with the GenAI semantic conventions (in-memory exporter)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from corral.config.schema import ModelConfig, ScriptStep, TracingConfig
from corral.telemetry import tracing

TRACED = {"observability": {"tracing": {"enabled": True, "exporter": "none", "service_name": "corral-test"}},
          "models": {"scripted": ModelConfig(provider="script", model="scripted-v1", num_retries=0)}}


def exporter_for(app) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    app.state.gateway.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_chat_span_carries_gen_ai_attributes(scripted_server) -> None:
    steps = [ScriptStep(text="hello", usage={"input_tokens": 11, "output_tokens": 3})]
    async with scripted_server(steps, **TRACED) as (url, app):
        spans = exporter_for(app)
        async with anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as sdk:
            await sdk.messages.create(model="scripted", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    [span] = spans.get_finished_spans()
    assert span.name == "chat scripted"
    assert span.kind == SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "scripted"
    assert attributes["gen_ai.response.model"] == "scripted-v1"
    assert attributes["gen_ai.provider.name"] == "scripted"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (11, 3)
    assert attributes["corral.surface"] == "anthropic"
    assert span.resource.attributes["service.name"] == "corral-test"
    assert span.end_time > span.start_time


async def test_span_joins_the_callers_trace_and_marks_errors(scripted_server) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    async with scripted_server([ScriptStep(error="rate_limit")], **TRACED) as (url, app):
        spans = exporter_for(app)
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/v1/chat/completions", headers={"traceparent": parent},
                                       json={"model": "scripted", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 429
    [span] = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == trace_id
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "rate_limit_exceeded"


async def test_embeddings_span_and_no_tracing_when_disabled(scripted_server) -> None:
    models = {"embedder": ModelConfig(provider="script", model="e1", embedding=True)}
    async with scripted_server(**{**TRACED, "models": models}) as (url, app):
        spans = exporter_for(app)
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk:
            await sdk.embeddings.create(model="embedder", input="a b c d")
    [span] = spans.get_finished_spans()
    assert (span.name, span.attributes["gen_ai.operation.name"]) == ("embeddings embedder", "embeddings")
    async with scripted_server() as (_, plain):
        assert plain.state.gateway.tracing is None


def test_otlp_exporter_is_optional_with_a_clear_message() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"corral\[otlp\]"):
            tracing.build_tracing(TracingConfig(enabled=True, exporter="otlp"))
    else:
        built = tracing.build_tracing(TracingConfig(enabled=True, exporter="otlp", endpoint="http://127.0.0.1:1"))
        assert built is not None
        built.provider.shutdown()
    assert tracing.build_tracing(TracingConfig(enabled=False)) is None


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback OTLP/HTTP collector that records what it is sent."""
    received: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_otlp_exporter_sends_gen_ai_spans_to_a_collector(scripted_server) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with otlp_receiver() as (endpoint, received):
        tracing_config = {"enabled": True, "exporter": "otlp", "endpoint": endpoint, "service_name": "corral-otlp"}
        async with scripted_server(observability={"tracing": tracing_config}) as (url, _):
            async with httpx.AsyncClient(base_url=url) as http_client:
                await http_client.post("/v1/chat/completions",
                                       json={"model": "scripted", "messages": [{"role": "user", "content": "x"}]})
        # Leaving the server shut the app down, which flushed the exporter.
    assert [path for path, _ in received] == ["/v1/traces"]
    export = ExportTraceServiceRequest.FromString(received[0][1])
    [resource_spans] = export.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    [span] = [s for scope in resource_spans.scope_spans for s in scope.spans]
    attributes = {a.key: a.value for a in span.attributes}
    assert (service, span.name) == ("corral-otlp", "chat scripted")
    assert attributes["gen_ai.request.model"].string_value == "scripted"
    assert attributes["gen_ai.usage.input_tokens"].int_value == 1
