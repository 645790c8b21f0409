from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from corral.config.schema import CorralConfig, ModelConfig, ProviderConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app


@pytest.fixture
def scripted_server():
    """`async with scripted_server(steps, **config) as (base_url, app)`: a loopback gateway
    over a scripted model (yields the app, so tests can reach its components)."""

    @asynccontextmanager
    async def start(steps: list[ScriptStep] | None = None, **config: object) -> AsyncIterator[tuple[str, object]]:
        base: dict[str, object] = {
            "providers": {"script": ProviderConfig(type="scripted")},
            "models": {"scripted": ModelConfig(provider="script", model="scripted")},
            **config,
        }
        provider = ScriptedProvider.from_steps("script", steps or [])
        app = create_app(CorralConfig.model_validate(base), providers={"script": provider})
        async with serve_app(app) as base_url:
            yield base_url, app

    return start


# ---- a loopback OTLP/HTTP trace receiver: decodes each ExportTraceServiceRequest (protobuf)
# into plain span records, keeping the request headers (auth) beside them.

@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    service: str


@dataclass
class Receiver:
    url: str
    spans: list[ReceivedSpan] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReceivedSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]

    def wait_for(self, count: int, seconds: float = 10.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.02)
        with self.lock:
            return list(self.spans)


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(), kind=span.kind,
                    attributes={a.key: value(a.value) for a in span.attributes},
                    events=[(e.name, {a.key: value(a.value) for a in e.attributes}) for e in span.events],
                    status_code=span.status.code, service=str(resource.get("service.name", ""))))
    return spans


@contextmanager
def _receiver() -> Iterator[Receiver]:
    receiver = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            spans = decode(body)
            with receiver.lock:
                receiver.paths.append(self.path)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                receiver.spans.extend(spans)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def otlp_receiver() -> Callable[[], Any]:
    """`with otlp_receiver() as receiver`: spans exported to ``receiver.url`` land in ``receiver.spans``."""
    return _receiver
