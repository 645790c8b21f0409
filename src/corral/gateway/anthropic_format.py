"""Anthropic Messages ingress: request validation, conversion to the neutral model,
and the Message / stream-event shapes (rules kept: docs/api.md, "Anthropic Messages")."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.gateway.errors import ApiError, error_body
from corral.gateway.openai_format import validation_error
from corral.gateway.streaming import sse_event
from corral.llm.types import (
    ChatRequest,
    ChatResult,
    FinishEvent,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    Thinking,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class BlockIn(_Loose):
    type: str
    text: str | None = None
    source: dict[str, Any] | None = None  # image
    id: str | None = None  # tool_use
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None  # thinking
    data: str | None = None  # redacted_thinking
    cache_control: dict[str, Any] | None = None


class MessageIn(_Loose):
    role: Literal["user", "assistant"]
    content: str | list[BlockIn]


class ToolIn(_Loose):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    type: str | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoiceIn(_Loose):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesIn(_Loose):
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[BlockIn] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    metadata: dict[str, Any] | None = None
    thinking: ThinkingIn | None = None
    output_config: OutputConfigIn | None = None
    service_tier: Literal["auto", "standard_only"] | None = None  # forwarded to Anthropic upstreams


class ThinkingIn(_Loose):
    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | None = Field(default=None, ge=1024)


class OutputFormatIn(_Loose):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfigIn(_Loose):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormatIn | None = None



MessagesIn.model_rebuild()


class CountTokensIn(_Loose):
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[BlockIn] | None = None
    tools: list[ToolIn] | None = None


def _validate(model: type[BaseModel], payload: Any) -> Any:
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validate_messages(payload: Any) -> MessagesIn:
    body: MessagesIn = _validate(MessagesIn, payload)
    unknown = sorted(set(body.model_extra or ()))
    if unknown:
        raise ApiError(400, f"{unknown[0]}: this field is not supported by this gateway", param=unknown[0])
    return body


def validate_count_tokens(payload: Any) -> CountTokensIn:
    body: CountTokensIn = _validate(CountTokensIn, payload)
    return body


def _image(block: BlockIn, where: str) -> ImagePart:
    source = block.source or {}
    if source.get("type") == "base64" and source.get("data") and source.get("media_type"):
        return ImagePart(url=f"data:{source['media_type']};base64,{source['data']}", cache_control=block.cache_control)
    if source.get("type") == "url" and source.get("url"):
        return ImagePart(url=str(source["url"]), cache_control=block.cache_control)
    raise ApiError(400, f"{where}.source: an image needs {{type: base64, media_type, data}} or {{type: url, url}}")


def _tool_result(block: BlockIn, where: str) -> Message:
    """A tool result with its text and images (screenshot and computer-use tools)."""
    message = Message(role="tool", tool_call_id=block.tool_use_id, cache_control=block.cache_control)
    parts: list[BlockIn] = [BlockIn(type="text", text=block.content)] if isinstance(block.content, str) else \
        [BlockIn.model_validate(part) for part in block.content or []]
    for i, part in enumerate(parts):
        if part.type == "text":
            message.content.append(TextPart(part.text or "", cache_control=part.cache_control))
        elif part.type == "image":
            message.content.append(_image(part, f"{where}.content[{i}]"))
        else:
            raise ApiError(400, f"{where}.content[{i}].type: unsupported tool_result content type '{part.type}'")
    message.is_error = bool(block.is_error)
    return message


def _user_messages(blocks: list[BlockIn], where: str) -> list[Message]:
    """Tool results become neutral tool messages, placed before the user's own parts."""
    results: list[Message] = []
    parts: list[Part] = []
    for i, block in enumerate(blocks):
        if block.type == "text":
            parts.append(TextPart(block.text or "", cache_control=block.cache_control))
        elif block.type == "image":
            parts.append(_image(block, f"{where}.content[{i}]"))
        elif block.type == "tool_result":
            if not block.tool_use_id:
                raise ApiError(400, f"{where}.content[{i}].tool_use_id: Field required")
            results.append(_tool_result(block, f"{where}.content[{i}]"))
        else:
            raise ApiError(400, f"{where}.content[{i}].type: unsupported content block type '{block.type}'")
    return results + ([Message(role="user", content=parts)] if parts else [])


def _assistant_message(blocks: list[BlockIn], where: str) -> Message:
    message = Message(role="assistant")
    for i, block in enumerate(blocks):
        if block.type == "text":
            message.content.append(TextPart(block.text or "", cache_control=block.cache_control))
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise ApiError(400, f"{where}.content[{i}]: a tool_use block needs 'id' and 'name'")
            arguments = json.dumps(block.input if block.input is not None else {}, separators=(",", ":"))
            message.tool_calls.append(ToolCall(block.id, block.name, arguments, cache_control=block.cache_control))
        elif block.type == "thinking":
            message.reasoning = (message.reasoning or "") + (block.thinking or "")
            message.thinking.append(Thinking(block.thinking or "", signature=block.signature))
        elif block.type == "redacted_thinking":
            message.thinking.append(Thinking(redacted=block.data or ""))
        else:
            raise ApiError(400, f"{where}.content[{i}].type: unsupported content block type '{block.type}'")
    return message


def _system(system: str | list[BlockIn] | None) -> list[Message]:
    """The system prompt as one system message; its blocks (and their cache breakpoints)
    are kept as parts."""
    if not system:
        return []
    if isinstance(system, str):
        return [Message.text("system", system)]
    for i, block in enumerate(system):
        if block.type != "text":
            raise ApiError(400, f"system[{i}].type: a system block must be text, not '{block.type}'")
    return [Message(role="system", content=[TextPart(b.text or "", cache_control=b.cache_control) for b in system])]


def to_messages(body: MessagesIn | CountTokensIn) -> list[Message]:
    messages = _system(body.system)
    for n, m in enumerate(body.messages):
        where = f"messages[{n}]"
        blocks = [BlockIn(type="text", text=m.content)] if isinstance(m.content, str) else m.content
        if m.role == "user":
            messages.extend(_user_messages(blocks, where))
        else:
            messages.append(_assistant_message(blocks, where))
    return messages


def to_tools(tools: list[ToolIn] | None) -> list[ToolSpec]:
    specs = []
    for i, tool in enumerate(tools or []):
        if tool.type not in (None, "custom"):
            raise ApiError(400, f"tools[{i}].type: server tool '{tool.type}' is not supported by this gateway")
        specs.append(ToolSpec(tool.name, tool.description or "", tool.input_schema, cache_control=tool.cache_control))
    return specs


def to_neutral(body: MessagesIn) -> ChatRequest:
    choice: str | None = None
    parallel: bool | None = None
    if body.tool_choice is not None:
        kind = body.tool_choice.type
        if kind == "tool" and not body.tool_choice.name:
            raise ApiError(400, "tool_choice.name: Field required when tool_choice.type is 'tool'")
        choice = {"auto": "auto", "any": "required", "none": "none"}.get(kind) or body.tool_choice.name
        if body.tool_choice.disable_parallel_tool_use is not None:
            parallel = not body.tool_choice.disable_parallel_tool_use
    extra: dict[str, Any] = {"top_k": body.top_k} if body.top_k is not None else {}
    if body.service_tier is not None:
        extra["service_tier"] = body.service_tier
    user = (body.metadata or {}).get("user_id")
    output = body.output_config
    response_format = None
    if output is not None and output.format is not None:
        response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": output.format.schema_}}
    return ChatRequest(
        model=body.model, messages=to_messages(body), tools=to_tools(body.tools), tool_choice=choice,
        parallel_tool_calls=parallel, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.max_tokens, stop=body.stop_sequences, user=str(user) if user else None, extra=extra,
        response_format=response_format, reasoning=_reasoning(body.thinking, output),
    )


def _reasoning(thinking: ThinkingIn | None, output: OutputConfigIn | None) -> Reasoning | None:
    effort = output.effort if output is not None else None
    if thinking is None and effort is None:
        return None
    if thinking is not None and thinking.type == "enabled" and thinking.budget_tokens is None:
        raise ApiError(400, "thinking.budget_tokens: Field required when thinking.type is 'enabled'",
                       param="thinking.budget_tokens")
    return Reasoning(effort=effort, budget_tokens=thinking.budget_tokens if thinking else None,
                     mode=thinking.type if thinking else None)


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }


def _parsed_input(arguments: str) -> Any:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"_raw": arguments}  # a model that emitted broken JSON: keep it, visibly
    return value if isinstance(value, dict) else {"value": value}


def message_json(result: ChatResult, *, id: str, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [thinking_block(t) for t in result.message.thinking]
    if result.message.reasoning and not result.message.thinking:  # thinking from an upstream that signs none
        content.append({"type": "thinking", "thinking": result.message.reasoning, "signature": ""})
    if result.message.text_content:
        content.append({"type": "text", "text": result.message.text_content})
    for call in result.message.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _parsed_input(call.arguments)})
    return {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": STOP_REASONS[result.finish_reason], "stop_sequence": None,
        "usage": usage_json(result.usage),
    }


def thinking_block(thinking: Thinking) -> dict[str, Any]:
    if thinking.redacted is not None:
        return {"type": "redacted_thinking", "data": thinking.redacted}
    return {"type": "thinking", "thinking": thinking.text, "signature": thinking.signature or ""}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return sse_event({"type": event, **data})


class EventWriter:
    """Neutral stream events -> Anthropic SSE events. Opens and closes content blocks
    so that each block's ``index`` is its position in the final ``content`` array."""

    def __init__(self, *, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._index = -1
        self._open: tuple[str, int] | None = None  # (kind, neutral tool index or thinking block ordinal)
        self._thinking_blocks = 0
        self.usage: Usage | None = None
        self.finish: FinishReason = "stop"

    def start(self) -> bytes:
        # Usage arrives at the end of a neutral stream; message_delta carries the real,
        # cumulative counts (including input_tokens) which the SDK folds into the snapshot.
        message: dict[str, Any] = {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage_json(Usage()),
        }
        return sse("message_start", {"message": message}) + sse("ping", {})

    def _switch(self, kind: str, key: int, block: dict[str, Any]) -> bytes:
        if self._open == (kind, key):
            return b""
        out = self._close()
        self._index += 1
        self._open = (kind, key)
        return out + sse("content_block_start", {"index": self._index, "content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"index": self._index, "delta": delta})

    def event(self, event: StreamEvent) -> bytes | None:
        if isinstance(event, TextDelta):
            if not event.text:
                return None
            head = self._switch("text", 0, {"type": "text", "text": ""})
            return head + self._delta({"type": "text_delta", "text": event.text})
        if isinstance(event, ReasoningDelta):
            return self._thinking(event)
        if isinstance(event, ToolCallDelta):
            block = {"type": "tool_use", "id": event.id or f"toolu_{self._id}_{event.index}",
                     "name": event.name or "", "input": {}}
            head = self._switch("tool_use", event.index, block)
            if not event.arguments:
                return head
            return head + self._delta({"type": "input_json_delta", "partial_json": event.arguments})
        if isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, FinishEvent):
            self.finish = event.reason
        return None

    def _thinking(self, event: ReasoningDelta) -> bytes:
        if event.redacted is not None:  # a whole block of its own
            self._thinking_blocks += 1
            return self._switch("redacted_thinking", self._thinking_blocks,
                                {"type": "redacted_thinking", "data": event.redacted})
        head = self._switch("thinking", self._thinking_blocks, {"type": "thinking", "thinking": "", "signature": ""})
        out = head + (self._delta({"type": "thinking_delta", "thinking": event.text}) if event.text else b"")
        if event.signature is not None:  # the block is complete: the next thinking opens another
            out += self._delta({"type": "signature_delta", "signature": event.signature})
            self._thinking_blocks += 1
        return out

    def end(self) -> bytes:
        usage = usage_json(self.usage or Usage())
        delta = {"stop_reason": STOP_REASONS[self.finish], "stop_sequence": None}
        return self._close() + sse("message_delta", {"delta": delta, "usage": usage}) + sse("message_stop", {})

    def error(self, error: ApiError) -> bytes:
        return sse("error", {"error": error_body(error, "anthropic")["error"]})
