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
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
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


class MessageIn(_Loose):
    role: Literal["user", "assistant"]
    content: str | list[BlockIn]


class ToolIn(_Loose):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    type: str | None = None


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
    return body


def validate_count_tokens(payload: Any) -> CountTokensIn:
    body: CountTokensIn = _validate(CountTokensIn, payload)
    return body


def _image(block: BlockIn, where: str) -> ImagePart:
    source = block.source or {}
    if source.get("type") == "base64" and source.get("data") and source.get("media_type"):
        return ImagePart(url=f"data:{source['media_type']};base64,{source['data']}")
    if source.get("type") == "url" and source.get("url"):
        return ImagePart(url=str(source["url"]))
    raise ApiError(400, f"{where}.source: an image needs {{type: base64, media_type, data}} or {{type: url, url}}")


def _tool_result_text(block: BlockIn) -> str:
    if isinstance(block.content, str) or block.content is None:
        return block.content or ""
    return "".join(str(part.get("text", "")) for part in block.content if part.get("type") == "text")


def _user_messages(blocks: list[BlockIn], where: str) -> list[Message]:
    """Tool results become neutral tool messages, placed before the user's own parts."""
    results: list[Message] = []
    parts: list[Part] = []
    for i, block in enumerate(blocks):
        if block.type == "text":
            parts.append(TextPart(block.text or ""))
        elif block.type == "image":
            parts.append(_image(block, f"{where}.content[{i}]"))
        elif block.type == "tool_result":
            if not block.tool_use_id:
                raise ApiError(400, f"{where}.content[{i}].tool_use_id: Field required")
            text = _tool_result_text(block)
            results.append(Message.text("tool", f"Error: {text}" if block.is_error else text,
                                        tool_call_id=block.tool_use_id))
        else:
            raise ApiError(400, f"{where}.content[{i}].type: unsupported content block type '{block.type}'")
    return results + ([Message(role="user", content=parts)] if parts else [])


def _assistant_message(blocks: list[BlockIn], where: str) -> Message:
    message = Message(role="assistant")
    for i, block in enumerate(blocks):
        if block.type == "text":
            message.content.append(TextPart(block.text or ""))
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise ApiError(400, f"{where}.content[{i}]: a tool_use block needs 'id' and 'name'")
            arguments = json.dumps(block.input if block.input is not None else {}, separators=(",", ":"))
            message.tool_calls.append(ToolCall(block.id, block.name, arguments))
        elif block.type == "thinking":
            message.reasoning = (message.reasoning or "") + (block.thinking or "")
        elif block.type == "redacted_thinking":
            continue  # opaque to every other provider
        else:
            raise ApiError(400, f"{where}.content[{i}].type: unsupported content block type '{block.type}'")
    return message


def _system(system: str | list[BlockIn] | None) -> list[Message]:
    if not system:
        return []
    if isinstance(system, str):
        return [Message.text("system", system)]
    return [Message.text("system", "".join(b.text or "" for b in system if b.type == "text"))]


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
        specs.append(ToolSpec(tool.name, tool.description or "", tool.input_schema))
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
    user = (body.metadata or {}).get("user_id")
    return ChatRequest(
        model=body.model, messages=to_messages(body), tools=to_tools(body.tools), tool_choice=choice,
        parallel_tool_calls=parallel, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.max_tokens, stop=body.stop_sequences, user=str(user) if user else None, extra=extra,
    )


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
    content: list[dict[str, Any]] = []
    if result.message.reasoning:
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


def sse(event: str, data: dict[str, Any]) -> bytes:
    return sse_event({"type": event, **data})


class EventWriter:
    """Neutral stream events -> Anthropic SSE events. Opens and closes content blocks
    so that each block's ``index`` is its position in the final ``content`` array."""

    def __init__(self, *, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._index = -1
        self._open: tuple[str, int] | None = None  # (kind, neutral tool index or 0)
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
            head = self._switch("thinking", 0, {"type": "thinking", "thinking": "", "signature": ""})
            return head + self._delta({"type": "thinking_delta", "thinking": event.text})
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

    def end(self) -> bytes:
        usage = usage_json(self.usage or Usage())
        delta = {"stop_reason": STOP_REASONS[self.finish], "stop_sequence": None}
        return self._close() + sse("message_delta", {"delta": delta, "usage": usage}) + sse("message_stop", {})

    def error(self, error: ApiError) -> bytes:
        return sse("error", {"error": error_body(error, "anthropic")["error"]})
