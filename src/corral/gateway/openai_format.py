"""OpenAI Chat Completions ingress: request validation, conversion to the neutral
model, and the response / chunk shapes (see docs/api.md for the rules we keep:
shared id/created across chunks, tool-call deltas with index, the include_usage chunk
with ``choices: []``, ``data: [DONE]``)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.gateway.errors import ApiError
from corral.gateway.http import parse_json
from corral.llm.types import (
    ChatRequest,
    ChatResult,
    FinishEvent,
    ImagePart,
    Message,
    Part,
    Reasoning,
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


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPartIn(_Loose):
    type: str
    text: str | None = None
    image_url: dict[str, Any] | str | None = None


class FunctionCallIn(_Loose):
    name: str
    arguments: str = ""


class ToolCallIn(_Loose):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPartIn] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDefIn(_Loose):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolIn(_Loose):
    type: Literal["function"] = "function"
    function: FunctionDefIn


class StreamOptionsIn(_Loose):
    include_usage: bool = False


class ChatCompletionIn(_Loose):
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptionsIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[ContentPartIn]", "dict[str,any]") or part.startswith(("list[", "function-")):
            continue  # union branch names pydantic adds; not part of the user's path
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    param = _loc(tuple(first["loc"]))
    extra = len(exc.errors()) - 1
    more = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
    return ApiError(400, f"Invalid value for '{param}': {first['msg']}{more}", param=param or None,
                    code="invalid_value" if first["type"] != "missing" else "missing_required_parameter")


def validate_chat(payload: Any) -> ChatCompletionIn:
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionIn.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validate_chat_json(raw: bytes) -> ChatCompletionIn:
    """`validate_chat(parse_json(raw))` in one pass (pydantic parses the JSON itself),
    with the same errors: invalid JSON and a body that is not an object are `invalid_json`."""
    try:
        return ChatCompletionIn.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            parse_json(raw)  # orjson's message for it, as every other route gives
            raise ApiError(400, f"We could not parse the JSON body of your request: {first['msg']}",
                           code="invalid_json") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise ApiError(400, "The request body must be a JSON object", code="invalid_json") from None
        raise validation_error(exc) from None


def _parts(content: str | list[ContentPartIn] | None) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for i, part in enumerate(content):
        if part.type == "text":
            parts.append(TextPart(part.text or ""))
        elif part.type == "image_url":
            image = part.image_url
            url = image if isinstance(image, str) else (image or {}).get("url")
            if not url:
                raise ApiError(400, f"content[{i}].image_url.url is required", param="image_url")
            detail = None if isinstance(image, str) else (image or {}).get("detail")
            parts.append(ImagePart(url=str(url), detail=detail))
        else:
            raise ApiError(400, f"Unsupported content part type '{part.type}'", param=f"content[{i}].type")
    return parts


_KNOWN_FIELDS = frozenset(ChatCompletionIn.model_fields)


def to_neutral(body: ChatCompletionIn) -> ChatRequest:
    messages: list[Message] = []
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        messages.append(Message(
            role=role,
            content=_parts(m.content),
            tool_calls=[ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []],
            tool_call_id=m.tool_call_id,
            name=m.name,
            reasoning=m.reasoning_content,
        ))
    tools = [
        ToolSpec(t.function.name, t.function.description or "",
                 t.function.parameters or {"type": "object", "properties": {}})
        for t in body.tools or []
    ]
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = str((choice.get("function") or {}).get("name") or "auto")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    extra = {k: v for k, v in body.model_extra.items() if k not in _KNOWN_FIELDS} if body.model_extra else {}
    return ChatRequest(
        model=body.model, messages=messages, tools=tools, tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens, stop=stop, seed=body.seed,
        response_format=body.response_format, user=body.user, extra=extra,
        reasoning=Reasoning(effort=body.reasoning_effort) if body.reasoning_effort else None,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_json(result: ChatResult, *, id: str, created: int, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.message.text_content or None}
    if result.message.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.message.tool_calls
        ]
    if result.message.reasoning:
        message["reasoning_content"] = result.message.reasoning
    finish = "stop" if result.finish_reason == "error" else result.finish_reason
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage_json(result.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Turns neutral stream events into OpenAI SSE lines. One per response."""

    def __init__(self, *, id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                      "system_fingerprint": None}
        # Every chunk is this head, the delta, and this tail: encoded once per response,
        # so a token costs one small `orjson.dumps` (of its delta).
        self._open = b"data: " + orjson.dumps(self._head)[:-1] + b',"choices":[{"index":0,"delta":'
        usage = b',"usage":null' if include_usage else b""
        self._close = b',"finish_reason":null,"logprobs":null}]' + usage + b"}\n\n"
        self._include_usage = include_usage
        self._tool_ids: dict[int, str] = {}
        self.usage: Usage | None = None
        self.finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if finish is None:
            return self._open + orjson.dumps(delta) + self._close
        chunk: dict[str, Any] = {**self._head,
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def event(self, event: StreamEvent) -> bytes | None:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text}) if event.text else None
        if isinstance(event, ReasoningDelta):
            return self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.index not in self._tool_ids:
                self._tool_ids[event.index] = event.id or f"call_{event.index}"
                call.update(id=self._tool_ids[event.index], type="function",
                            function={"name": event.name or "", "arguments": event.arguments})
            else:
                call["function"] = {"arguments": event.arguments}
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, UsageEvent):
            self.usage = event.usage
            return None
        if isinstance(event, FinishEvent):
            self.finish = "stop" if event.reason == "error" else event.reason
            return None
        return None

    def end(self) -> bytes:
        out = self._chunk({}, self.finish or "stop")
        if self._include_usage:
            usage = usage_json(self.usage or Usage())
            out += b"data: " + orjson.dumps({**self._head, "choices": [], "usage": usage}) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(error: ApiError) -> bytes:
        body = {"error": {"message": error.message, "type": "server_error" if error.status >= 500 else
                          "invalid_request_error", "param": error.param, "code": error.code}}
        return b"data: " + orjson.dumps(body) + b"\n\n"
