"""OpenAI Responses ingress: request validation, conversion to the neutral model, the
Response object and the stream events (rules kept: docs/api.md, "OpenAI Responses")."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.gateway.errors import ApiError
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


class ItemIn(_Loose):
    type: str | None = None  # "message" (or omitted with a role), "function_call", "function_call_output"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[dict[str, Any]] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[dict[str, Any]] | None = None


class ToolIn(_Loose):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesIn(_Loose):
    model: str = Field(min_length=1)
    input: str | list[ItemIn]
    instructions: str | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    text: dict[str, Any] | None = None
    user: str | None = None
    store: bool | None = None
    reasoning: ReasoningIn | None = None
    background: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None


class ReasoningIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a field inside it is honoured or refused too

    effort: Literal["minimal", "low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


ResponsesIn.model_rebuild()

# Accepted and honoured only with these values: anything else is refused by name, since
# this gateway does not store responses or run them in the background.
_REFUSED: dict[str, tuple[object, str]] = {
    "store": (True, "responses are not stored by this gateway; send store: false and the whole "
                    "conversation in 'input'"),
    "background": (True, "background responses are not supported; use the runs API for background work"),
    "truncation": ("auto", "automatic truncation is not supported; the request is sent whole (truncation: "
                           "disabled)"),
}


def validate_responses(payload: Any) -> ResponsesIn:
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object", code="invalid_json")
    try:
        body = ResponsesIn.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if body.previous_response_id:
        # Responses are not stored: the client sends the whole conversation as `input`.
        raise ApiError(400, "previous_response_id is not supported by this gateway; send the conversation in "
                       "'input'", param="previous_response_id", code="unsupported_parameter")
    for name, (refused, why) in _REFUSED.items():
        if getattr(body, name) == refused:
            raise ApiError(400, f"{name}: {why}", param=name, code="unsupported_parameter")
    unknown = sorted(body.model_extra or ())
    if unknown:
        raise ApiError(400, f"{unknown[0]}: this field is not supported by this gateway", param=unknown[0],
                       code="unsupported_parameter")
    return body


def _content(content: str | list[dict[str, Any]] | None, where: str) -> list[Part]:
    if content is None or isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(TextPart(str(part.get("text", ""))))
        elif kind == "input_image" and part.get("image_url"):
            parts.append(ImagePart(url=str(part["image_url"]), detail=part.get("detail")))
        else:
            raise ApiError(400, f"Unsupported content part type '{kind}'", param=f"{where}.content[{i}].type",
                           code="invalid_value")
    return parts


def _add_call(messages: list[Message], item: ItemIn, where: str) -> None:
    if not item.call_id or not item.name:
        raise ApiError(400, "A function_call item needs 'call_id' and 'name'", param=where, code="invalid_value")
    call = ToolCall(item.call_id, item.name, item.arguments or "")
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        last.tool_calls.append(call)  # one assistant turn may hold text and several calls
    else:
        messages.append(Message(role="assistant", tool_calls=[call]))


def _tool_output(item: ItemIn, where: str) -> Message:
    if not item.call_id:
        raise ApiError(400, "A function_call_output item needs 'call_id'", param=where, code="invalid_value")
    output = item.output
    text = output if isinstance(output, str) else "".join(
        str(p.get("text", "")) for p in output or [] if p.get("type") in ("input_text", "output_text"))
    return Message.text("tool", text, tool_call_id=item.call_id)


def to_messages(body: ResponsesIn) -> list[Message]:
    messages = [Message.text("system", body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*messages, Message.text("user", body.input)]
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        kind = item.type or ("message" if item.role else None)
        if kind == "message" and item.role:
            role = "system" if item.role == "developer" else item.role
            messages.append(Message(role=role, content=_content(item.content, where)))
        elif kind == "function_call":
            _add_call(messages, item, where)
        elif kind == "function_call_output":
            messages.append(_tool_output(item, where))
        elif kind == "reasoning":
            continue  # opaque reasoning items from another provider: nothing to replay
        else:
            raise ApiError(400, f"Unsupported input item type '{kind}'", param=f"{where}.type", code="invalid_value")
    return messages


def to_tools(tools: list[ToolIn] | None) -> list[ToolSpec]:
    specs = []
    for i, tool in enumerate(tools or []):
        if tool.type != "function" or not tool.name:
            raise ApiError(400, f"Only function tools are supported (got '{tool.type}')", param=f"tools[{i}].type",
                           code="invalid_value")
        specs.append(ToolSpec(tool.name, tool.description or "", tool.parameters or {"type": "object",
                                                                                      "properties": {}}))
    return specs


def to_neutral(body: ResponsesIn) -> ChatRequest:
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = str(choice.get("name") or "auto")
    fmt = (body.text or {}).get("format")
    response_format: dict[str, Any] | None = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: v for k, v in fmt.items() if k != "type"}
        response_format = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        response_format = {"type": "json_object"}
    return ChatRequest(
        model=body.model, messages=to_messages(body), tools=to_tools(body.tools), tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.max_output_tokens, response_format=response_format, user=body.user,
        reasoning=Reasoning(effort=body.reasoning.effort, summary=body.reasoning.summary) if body.reasoning else None,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


class ResponseShape:
    """The fields of a Response object that do not change while it is produced."""

    def __init__(self, body: ResponsesIn, *, id: str) -> None:
        self.id = id
        self.created_at = int(time.time())
        self.body = body

    def render(self, status: str, output: list[dict[str, Any]], usage: Usage | None,
               finish: FinishReason | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.body
        incomplete = {"reason": "max_output_tokens"} if finish == "length" else None
        if status == "completed" and incomplete:
            status = "incomplete"
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": body.model, "output": output, "error": error, "incomplete_details": incomplete,
            "instructions": body.instructions, "metadata": body.metadata or {},
            "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
            "temperature": body.temperature, "top_p": body.top_p, "max_output_tokens": body.max_output_tokens,
            "tool_choice": body.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "previous_response_id": None, "store": False,
            "reasoning": body.reasoning.model_dump() if body.reasoning else None,
            "text": body.text or {"format": {"type": "text"}}, "truncation": "disabled", "user": body.user,
            "usage": usage_json(usage) if usage is not None else None,
        }


def message_item(id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" \
        else []
    return {"type": "message", "id": id, "role": "assistant", "status": status, "content": content}


def call_item(id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": id, "call_id": call.id, "name": call.name,
            "arguments": call.arguments if status == "completed" else "", "status": status}


def response_json(result: ChatResult, shape: ResponseShape) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if result.message.text_content:
        output.append(message_item(f"msg_{shape.id[5:]}", result.message.text_content, "completed"))
    for n, call in enumerate(result.message.tool_calls):
        output.append(call_item(f"fc_{shape.id[5:]}_{n}", call, "completed"))
    return shape.render("completed", output, result.usage, result.finish_reason)


class ResponseEventWriter:
    """Neutral stream events -> Responses stream events, each with the next ``sequence_number``."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # finished items, in output order
        self._text: list[str] | None = None  # the open message item's text, if one is open
        self._call: tuple[int, ToolCall] | None = None  # the open function call (neutral index, call)
        self.usage: Usage | None = None
        self.finish: FinishReason = "stop"

    def _emit(self, kind: str, **data: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return sse_event(event)

    @property
    def _item_id(self) -> str:
        return f"{'msg' if self._text is not None else 'fc'}_{self.shape.id[5:]}_{len(self._output)}"

    def start(self) -> bytes:
        response = self.shape.render("in_progress", [], None)
        return self._emit("response.created", response=response) + self._emit("response.in_progress",
                                                                               response=response)

    def event(self, event: StreamEvent) -> bytes | None:
        if isinstance(event, TextDelta) and event.text:
            out = b""
            if self._text is None:
                out += self._close()
                self._text = []
                at: dict[str, Any] = {"item_id": self._item_id, "output_index": len(self._output)}
                out += self._emit("response.output_item.added", output_index=at["output_index"],
                                  item=message_item(at["item_id"], "", "in_progress"))
                out += self._emit("response.content_part.added", **at, content_index=0,
                                  part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            self._text.append(event.text)
            return out + self._emit("response.output_text.delta", item_id=self._item_id,
                                    output_index=len(self._output), content_index=0, delta=event.text, logprobs=[])
        if isinstance(event, ToolCallDelta):
            return self._call_delta(event)
        if isinstance(event, UsageEvent):
            self.usage = event.usage
        elif isinstance(event, FinishEvent):
            self.finish = event.reason
        return None

    def _call_delta(self, event: ToolCallDelta) -> bytes:
        out = b""
        if self._call is None or self._call[0] != event.index:
            out += self._close()
            call = ToolCall(event.id or f"call_{self.shape.id[5:]}_{event.index}", event.name or "", "")
            self._call = (event.index, call)
            out += self._emit("response.output_item.added", output_index=len(self._output),
                              item=call_item(self._item_id, call, "in_progress"))
        call = self._call[1]
        call.arguments += event.arguments
        if event.arguments:
            out += self._emit("response.function_call_arguments.delta", item_id=self._item_id,
                              output_index=len(self._output), delta=event.arguments)
        return out

    def _close(self) -> bytes:
        at: dict[str, Any] = {"item_id": self._item_id, "output_index": len(self._output)}
        out = b""
        if self._text is not None:
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = message_item(at["item_id"], text, "completed")
            out += self._emit("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            out += self._emit("response.content_part.done", **at, content_index=0, part=part)
            self._text = None
        elif self._call is not None:
            call = self._call[1]
            item = call_item(at["item_id"], call, "completed")
            out += self._emit("response.function_call_arguments.done", **at, name=call.name,
                              arguments=call.arguments)
            self._call = None
        else:
            return b""
        self._output.append(item)
        return out + self._emit("response.output_item.done", output_index=at["output_index"], item=item)

    def end(self) -> bytes:
        out = self._close()
        response = self.shape.render("completed", self._output, self.usage or Usage(), self.finish)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._emit(kind, response=response)

    def error(self, error: ApiError) -> bytes:
        code = error.code or ("server_error" if error.status >= 500 else "invalid_request_error")
        failed = self.shape.render("failed", self._output, self.usage, error={"code": code, "message": error.message})
        return self._emit("error", code=code, message=error.message, param=error.param) + \
            self._emit("response.failed", response=failed)
