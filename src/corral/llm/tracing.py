"""The ``chat`` span of one routed model call (OpenTelemetry GenAI conventions).

The router opens one span per call, across all its attempts: each failed attempt and
each fallback is an event on it, and the span ends with the deployment that answered,
the response model, usage, cost (when prices are known) and finish reason. Content
(``gen_ai.input.messages``, ``gen_ai.output.messages``) only with ``capture_content``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from corral.llm import errors
from corral.llm.pricing import PricingTable
from corral.llm.types import ChatRequest, ChatResult, Message, StreamEvent, Usage, UsageEvent
from corral.telemetry.tracing import Tracing, fail, provider_name


class ChatSpan:
    __slots__ = ("_alias", "_finish", "_model", "_output", "_pricing", "_tracing", "_usage", "span")

    def __init__(self, tracing: Tracing, operation: str, alias: str, parent: Context | None,
                 pricing: PricingTable | None = None, attributes: Mapping[str, str | bool | int] | None = None) -> None:
        self._tracing = tracing
        self._pricing = pricing
        self._alias = alias
        self.span = tracing.start(f"{operation} {alias}", parent=parent, kind=SpanKind.CLIENT,
                                  attributes={"gen_ai.operation.name": operation, "gen_ai.request.model": alias,
                                              **(attributes or {})})
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._model: str | None = None
        self._output: list[str] | None = [] if tracing.capture_content else None

    @property
    def recording(self) -> bool:
        return self.span.is_recording()

    def request(self, request: ChatRequest) -> None:
        span = self.span
        if not span.is_recording():
            return
        for key, value in (("gen_ai.request.temperature", request.temperature),
                           ("gen_ai.request.top_p", request.top_p),
                           ("gen_ai.request.max_tokens", request.max_tokens),
                           ("gen_ai.request.seed", request.seed)):
            if value is not None:
                span.set_attribute(key, value)
        if self._tracing.capture_content:
            system = [m for m in request.messages if m.role == "system"]
            if system:
                span.set_attribute("gen_ai.system_instructions", self._tracing.content(
                    [{"type": "text", "content": m.text_content} for m in system]))
            span.set_attribute("gen_ai.input.messages", self._tracing.content(
                [message_json(m) for m in request.messages if m.role != "system"]))
            if request.tools:
                span.set_attribute("gen_ai.tool.definitions", self._tracing.content(
                    [{"type": "function", "name": t.name, "description": t.description} for t in request.tools]))

    def attempt(self, deployment: str, provider_type: str, upstream_model: str, number: int) -> None:
        """The deployment now trying (the last one is the one that answered)."""
        span = self.span
        if span.is_recording():
            span.set_attribute("gen_ai.provider.name", provider_name(provider_type))
            span.set_attribute("corral.deployment", deployment)
            span.set_attribute("corral.attempts", number)
            self._model = upstream_model

    def attempt_failed(self, deployment: str, error: errors.ProviderError, *, retry_in: float | None) -> None:
        if self.span.is_recording():
            attributes: dict[str, Any] = {"corral.deployment": deployment, "error.type": error.code,
                                          "http.response.status_code": error.status}
            if retry_in is not None:
                attributes["corral.retry_in_seconds"] = round(retry_in, 3)
            self.span.add_event("corral.attempt_failed", attributes)

    def fallback(self, from_alias: str, to_aliases: list[str], error: errors.ProviderError) -> None:
        if self.span.is_recording():
            self.span.add_event("corral.fallback", {"corral.from": from_alias, "corral.to": to_aliases,
                                                    "error.type": error.code})

    def event(self, event: StreamEvent) -> None:
        """One streamed event (usage, finish, and text when content is captured)."""
        if isinstance(event, UsageEvent):
            self._usage = event.usage if self._usage is None else self._usage + event.usage
        elif event.type == "finish":
            self._finish = event.reason
            if event.model:
                self._model = event.model
        elif event.type == "text" and self._output is not None:
            self._output.append(event.text)

    def result(self, result: ChatResult) -> None:
        self._usage, self._finish = result.usage, result.finish_reason
        self._model = result.model or self._model
        if result.id and self.span.is_recording():
            self.span.set_attribute("gen_ai.response.id", result.id)
        if self._output is not None and self.span.is_recording():
            self.span.set_attribute("gen_ai.output.messages", self._tracing.content(
                [{**message_json(result.message), "finish_reason": result.finish_reason}]))
            self._output = None

    def end(self, error: BaseException | None = None) -> None:
        span = self.span
        if span.is_recording():
            if self._model:
                span.set_attribute("gen_ai.response.model", self._model)
            if self._finish:
                span.set_attribute("gen_ai.response.finish_reasons", (self._finish,))
            usage = self._usage
            if usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                if usage.cached_input_tokens:
                    span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens)
                if usage.reasoning_tokens:
                    span.set_attribute("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens)
                if self._pricing is not None:
                    span.set_attribute("gen_ai.usage.cost", self._pricing.cost(usage, self._alias, self._model))
            if self._output:  # a stream's text (a stream has no ChatResult here)
                span.set_attribute("gen_ai.output.messages", self._tracing.content(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "".join(self._output)}],
                      "finish_reason": self._finish or "stop"}]))
            if isinstance(error, errors.ProviderError):
                fail(span, error.code, self._tracing.content(f"{type(error).__name__}: {error.message}"))
            elif error is not None:
                fail(span, type(error).__qualname__)
        span.end()


def message_json(message: Message) -> dict[str, Any]:
    """A neutral message in the conventions' ``{role, parts}`` shape."""
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append({"type": "tool_call_response", "id": message.tool_call_id, "response": message.text_content})
    else:
        text = message.text_content
        if text:
            parts.append({"type": "text", "content": text})
        for call in message.tool_calls:
            parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
    return {"role": message.role, "parts": parts}
