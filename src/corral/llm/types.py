"""The neutral model every wire format is translated into at the edge.

The core (router, agents, gateway internals) only ever sees these types. Edges
(`corral.llm.providers.*` for upstreams, `corral.gateway.*` for ingress) convert
vendor JSON to and from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image by URL (``https://`` or ``data:`` URI)."""

    url: str
    detail: str | None = None
    type: Literal["image"] = "image"


Part = TextPart | ImagePart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text exactly as the model produced it

    def parsed_arguments(self) -> Any:
        import json

        return json.loads(self.arguments or "{}")


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role == "tool"
    name: str | None = None
    reasoning: str | None = None

    @classmethod
    def text(cls, role: Role, text: str, **kw: Any) -> Message:
        return cls(role=role, content=[TextPart(text)] if text else [], **kw)

    @property
    def text_content(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


ToolChoice = Literal["auto", "none", "required"] | str  # a str other than those names one tool


@dataclass(slots=True)
class ChatRequest:
    model: str  # the upstream model id once routed; the alias on ingress
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None  # {"type": "json_schema", "json_schema": {...}} etc.
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific pass-through params
    timeout: float | None = None  # seconds, for the whole upstream call

    def for_upstream(self, model: str) -> ChatRequest:
        """A copy for one upstream: its model id, and its own `extra` (the router adds
        defaults there). Written out: `dataclasses.replace` costs several times more, on
        every routed call."""
        return ChatRequest(model, self.messages, self.tools, self.tool_choice, self.parallel_tool_calls,
                           self.temperature, self.top_p, self.max_tokens, self.stop, self.seed,
                           self.response_format, self.user, dict(self.extra), self.timeout)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(slots=True)
class ChatResult:
    message: Message
    finish_reason: FinishReason
    usage: Usage
    model: str  # what the upstream says it used
    id: str | None = None  # the upstream's response id, if any


# ---- stream events -------------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ReasoningDelta:
    text: str
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of a tool call. ``index`` identifies the call within one response;
    ``id`` and ``name`` arrive on the first fragment, ``arguments`` fragments concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: Literal["tool_call"] = "tool_call"


@dataclass(slots=True)
class UsageEvent:
    usage: Usage
    type: Literal["usage"] = "usage"


@dataclass(slots=True)
class FinishEvent:
    reason: FinishReason
    model: str | None = None
    type: Literal["finish"] = "finish"


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | UsageEvent | FinishEvent


class StreamAccumulator:
    """Folds stream events into a `ChatResult` (used by non-stream callers of streams,
    usage recording and tests)."""

    def __init__(self, model: str = "") -> None:
        self.model = model
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, ToolCall] = {}
        self.usage = Usage()
        self.finish_reason: FinishReason = "stop"

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is None:
                call = self._calls[event.index] = ToolCall(id=event.id or "", name=event.name or "", arguments="")
            if event.id:
                call.id = event.id
            if event.name:
                call.name = event.name
            call.arguments += event.arguments
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, FinishEvent):
            self.finish_reason = event.reason
            if event.model:
                self.model = event.model

    def result(self) -> ChatResult:
        message = Message.text("assistant", "".join(self._text))
        message.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        if self._reasoning:
            message.reasoning = "".join(self._reasoning)
        return ChatResult(message=message, finish_reason=self.finish_reason, usage=self.usage, model=self.model)


@dataclass(slots=True)
class ModelInfo:
    id: str
    owned_by: str = "corral"
    context_window: int | None = None
    max_output_tokens: int | None = None
