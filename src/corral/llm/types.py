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


# A prompt-cache breakpoint as the client sent it (Anthropic's ``cache_control``, e.g.
# ``{"type": "ephemeral", "ttl": "1h"}``): forwarded to upstreams that take one, and a
# no-op for those that cache on their own (OpenAI), as docs/api.md's mapping table says.
CacheControl = dict[str, Any]


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"
    cache_control: CacheControl | None = None


@dataclass(slots=True)
class ImagePart:
    """An image by URL (``https://`` or ``data:`` URI)."""

    url: str
    detail: str | None = None
    type: Literal["image"] = "image"
    cache_control: CacheControl | None = None


@dataclass(slots=True)
class Thinking:
    """One block of a model's extended thinking, as the model produced it: its text and
    the ``signature`` the vendor needs to accept it back in a later turn, or, for a block
    the vendor redacted, only its opaque ``redacted`` data."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


Part = TextPart | ImagePart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text exactly as the model produced it
    cache_control: CacheControl | None = None

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
    reasoning: str | None = None  # the thinking text, for surfaces that show it as one string
    thinking: list[Thinking] = field(default_factory=list)  # the signed blocks (Anthropic replays them)
    cache_control: CacheControl | None = None  # role == "tool": on the tool result itself
    is_error: bool = False  # role == "tool": the tool failed

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
    cache_control: CacheControl | None = None


Effort = Literal["minimal", "low", "medium", "high", "xhigh", "max"]


@dataclass(slots=True)
class Reasoning:
    """How much the model should think: an ``effort`` level (OpenAI's ``reasoning_effort``,
    Anthropic's ``output_config.effort``), a thinking ``budget_tokens`` (Anthropic's
    ``thinking``), ``adaptive`` thinking, or thinking ``disabled``; ``summary`` asks for
    a reasoning summary (OpenAI Responses). Providers translate what they have an
    equivalent for (docs/api.md)."""

    effort: Effort | None = None
    budget_tokens: int | None = None
    mode: Literal["enabled", "adaptive", "disabled"] | None = None
    summary: str | None = None


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
    reasoning: Reasoning | None = None

    def for_upstream(self, model: str) -> ChatRequest:
        """A copy for one upstream: its model id, and its own `extra` (the router adds
        defaults there). Written out: `dataclasses.replace` costs several times more, on
        every routed call."""
        return ChatRequest(model, self.messages, self.tools, self.tool_choice, self.parallel_tool_calls,
                           self.temperature, self.top_p, self.max_tokens, self.stop, self.seed,
                           self.response_format, self.user, dict(self.extra), self.timeout, self.reasoning)


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
    """Thinking text; a block ends with its ``signature`` (a delta of its own), and a
    redacted block arrives whole as ``redacted`` data."""

    text: str
    type: Literal["reasoning"] = "reasoning"
    signature: str | None = None
    redacted: str | None = None


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
        self._thinking: list[Thinking] = []
        self._open_thinking = False  # the last block has not been signed yet
        self._calls: dict[int, ToolCall] = {}
        self.usage = Usage()
        self.finish_reason: FinishReason = "stop"

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._add_thinking(event)
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

    def _add_thinking(self, event: ReasoningDelta) -> None:
        self._reasoning.append(event.text)
        if event.redacted is not None:
            self._thinking.append(Thinking(redacted=event.redacted))
            self._open_thinking = False
            return
        if not self._open_thinking:
            self._thinking.append(Thinking())
            self._open_thinking = True
        block = self._thinking[-1]
        block.text += event.text
        if event.signature is not None:
            block.signature = (block.signature or "") + event.signature
            self._open_thinking = False

    def result(self) -> ChatResult:
        message = Message.text("assistant", "".join(self._text))
        message.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        if self._reasoning:
            message.reasoning = "".join(self._reasoning)
            message.thinking = self._thinking
        return ChatResult(message=message, finish_reason=self.finish_reason, usage=self.usage, model=self.model)


@dataclass(slots=True)
class ModelInfo:
    id: str
    owned_by: str = "corral"
    context_window: int | None = None
    max_output_tokens: int | None = None
