"""Anthropic Messages: system prompt split out, tool_use / tool_result blocks,
``x-api-key`` + ``anthropic-version`` headers, a required ``max_tokens``.

Usage is normalised so ``input_tokens`` counts the whole prompt (Anthropic's own
``input_tokens`` excludes cache reads and writes) and ``cached_input_tokens`` the
cache reads, the same meaning as OpenAI's ``prompt_tokens`` / ``cached_tokens``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers._http import HttpClient, as_dict, as_int, as_list
from corral.llm.providers._wire import Network
from corral.llm.readahead import ReadAhead
from corral.llm.types import (
    ChatRequest,
    ChatResult,
    FinishEvent,
    FinishReason,
    ImagePart,
    Message,
    ModelInfo,
    Reasoning,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    Thinking,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# Structured output (``response_format``) rides on a forced tool call whose input is
# the JSON answer; the adapter turns that call back into the message text.
STRUCTURED_TOOL = "structured_output"
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Stream `error` events carry a type instead of an HTTP status.
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicProvider:
    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        base_url: str,
        api_key: str | None = None,
        network: Network | None = None,
    ) -> None:
        self.name = name
        headers = {"anthropic-version": config.api_version or DEFAULT_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        self._http = HttpClient(name, config, base_url=base_url, headers=headers, api_key=api_key, network=network)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(self, request: ChatRequest) -> ChatResult:
        payload = build_body(request)
        raw = await self._http.request_json("POST", "/v1/messages", json_body=payload, seconds=request.timeout)
        body = as_dict(raw)
        if body.get("type") == "error":
            raise self._error_event(body)
        if not isinstance(body.get("content"), list):
            raise self._http.bad_payload("no content in the message")
        structured = structured_schema(request) is not None
        message = Message(role="assistant")
        reasoning: list[str] = []
        for block in as_list(body.get("content")):
            block = as_dict(block)
            kind = block.get("type")
            if kind == "text":
                message.content.append(TextPart(str(block.get("text") or "")))
            elif kind == "tool_use" and structured and block.get("name") == STRUCTURED_TOOL:
                message.content.append(TextPart(json.dumps(block.get("input") or {})))
            elif kind == "tool_use":
                message.tool_calls.append(
                    ToolCall(
                        id=str(block.get("id") or ""),
                        name=str(block.get("name") or ""),
                        arguments=json.dumps(block.get("input") or {}),
                    )
                )
            elif kind == "thinking":
                reasoning.append(str(block.get("thinking") or ""))
                signature = _str(block.get("signature"))
                message.thinking.append(Thinking(str(block.get("thinking") or ""), signature=signature))
            elif kind == "redacted_thinking":
                message.thinking.append(Thinking(redacted=str(block.get("data") or "")))
        if reasoning:
            message.reasoning = "".join(reasoning)
        finish = _FINISH.get(str(body.get("stop_reason")), "stop")
        return ChatResult(
            message=message,
            finish_reason="stop" if finish == "tool_calls" and not message.tool_calls else finish,
            usage=parse_usage(body.get("usage")),
            model=str(body.get("model") or request.model),
            id=body.get("id") if isinstance(body.get("id"), str) else None,
        )

    async def stream(self, request: ChatRequest, *, read_ahead: ReadAhead | None = None) -> AsyncIterator[StreamEvent]:
        state = _StreamState(request.model, structured=structured_schema(request) is not None)
        payload = build_body(request, stream=True)
        async with self._http.open("POST", "/v1/messages", json_body=payload, seconds=request.timeout) as resp:
            events = self._http.sse(resp, read_ahead)
            async for sse in events:
                data = as_dict(self._http.event_json(sse))
                for event in self._stream_events(data, state):
                    yield event
                if state.stopped:
                    break
            if state.stopped:
                await self._http.drain(events, response=resp)  # so the connection returns to the pool
        if state.finish is None:
            raise self._http.truncated()
        if state.finish == "tool_calls" and not state.tool_calls:
            state.finish = "stop"  # only the structured-output tool was called
        yield UsageEvent(parse_usage(state.usage))
        yield FinishEvent(state.finish, model=state.model)

    def _stream_events(self, data: dict[str, Any], state: _StreamState) -> list[StreamEvent]:
        kind = data.get("type")
        if kind == "message_start":
            message = as_dict(data.get("message"))
            state.model = str(message.get("model") or state.model)
            state.usage.update(as_dict(message.get("usage")))
        elif kind == "content_block_start":
            return state.block_start(as_int(data.get("index")), as_dict(data.get("content_block")))
        elif kind == "content_block_delta":
            return state.block_delta(as_int(data.get("index")), as_dict(data.get("delta")))
        elif kind == "content_block_stop":
            return state.block_stop(as_int(data.get("index")))
        elif kind == "message_delta":
            # usage counts here are cumulative: they replace, never add.
            state.usage.update({k: v for k, v in as_dict(data.get("usage")).items() if v is not None})
            stop_reason = as_dict(data.get("delta")).get("stop_reason")
            if stop_reason:
                state.finish = _FINISH.get(str(stop_reason), "stop")
        elif kind == "message_stop":
            state.stopped = True
            state.finish = state.finish or "stop"
        elif kind == "error":
            raise self._error_event(data)
        return []

    def _error_event(self, data: dict[str, Any]) -> errors.ProviderError:
        error = as_dict(data.get("error"))
        status = _STATUS_BY_ERROR_TYPE.get(str(error.get("type")), 500)
        return self._http.error_from(status, json.dumps(data).encode())

    async def list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        params: dict[str, str] = {"limit": "1000"}
        for _ in range(20):  # bounded pagination
            body = as_dict(await self._http.request_json("GET", "/v1/models", params=params))
            for item in as_list(body.get("data")):
                if isinstance(as_dict(item).get("id"), str):
                    models.append(ModelInfo(id=item["id"], owned_by="anthropic"))
            if not body.get("has_more") or not body.get("last_id"):
                break
            params = {"limit": "1000", "after_id": str(body["last_id"])}
        return models

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        raise errors.BadRequestError(
            "the Anthropic Messages API has no embeddings endpoint; serve embeddings from an "
            "openai-compatible or gemini provider",
            provider=self.name,
        )


class _StreamState:
    """Maps content-block indexes (text, thinking and tool blocks share one sequence)
    onto tool-call ordinals, so parallel calls get indexes 0, 1, 2, ..."""

    def __init__(self, model: str, *, structured: bool = False) -> None:
        self.model = model
        self.usage: dict[str, Any] = {}
        self.finish: FinishReason | None = None
        self.stopped = False
        self._structured = structured
        self._tool_index: dict[int, int] = {}
        self._tool_has_args: dict[int, bool] = {}
        self._answer_blocks: dict[int, bool] = {}  # structured-output blocks -> any input seen

    @property
    def tool_calls(self) -> int:
        return len(self._tool_index)

    def block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "tool_use" and self._structured and block.get("name") == STRUCTURED_TOOL:
            self._answer_blocks[index] = False
            return []
        if kind == "tool_use":
            ordinal = self._tool_index[index] = len(self._tool_index)
            self._tool_has_args[ordinal] = False
            return [ToolCallDelta(index=ordinal, id=str(block.get("id") or ""), name=str(block.get("name") or ""))]
        if kind == "text" and block.get("text"):
            return [TextDelta(str(block["text"]))]
        if kind == "redacted_thinking":
            return [ReasoningDelta("", redacted=str(block.get("data") or ""))]
        if kind == "thinking" and block.get("thinking"):
            return [ReasoningDelta(str(block["thinking"]))]
        return []

    def block_delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(str(delta["text"]))]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ReasoningDelta(str(delta["thinking"]))]
        if kind == "signature_delta" and delta.get("signature"):
            return [ReasoningDelta("", signature=str(delta["signature"]))]
        if kind == "input_json_delta" and index in self._answer_blocks and delta.get("partial_json"):
            self._answer_blocks[index] = True
            return [TextDelta(str(delta["partial_json"]))]
        if kind == "input_json_delta" and index in self._tool_index and delta.get("partial_json"):
            ordinal = self._tool_index[index]
            self._tool_has_args[ordinal] = True
            return [ToolCallDelta(index=ordinal, arguments=str(delta["partial_json"]))]
        return []

    def block_stop(self, index: int) -> list[StreamEvent]:
        if self._answer_blocks.get(index) is False:
            return [TextDelta("{}")]
        ordinal = self._tool_index.get(index)
        if ordinal is not None and not self._tool_has_args[ordinal]:
            return [ToolCallDelta(index=ordinal, arguments="{}")]  # a tool called with no input
        return []


def parse_usage(raw: Any) -> Usage:
    raw = as_dict(raw)
    cache_read = as_int(raw.get("cache_read_input_tokens"))
    cache_write = as_int(raw.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=as_int(raw.get("input_tokens")) + cache_read + cache_write,
        output_tokens=as_int(raw.get("output_tokens")),
        cached_input_tokens=cache_read,
    )


# ---- encoding ---------------------------------------------------------------


def build_body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": encode_messages([m for m in request.messages if m.role != "system"]),
    }
    system = encode_system([m for m in request.messages if m.role == "system"])
    if system:
        body["system"] = system
    tools = [_cached({"name": t.name, "description": t.description, "input_schema": t.parameters}, t.cache_control)
             for t in request.tools]
    schema = structured_schema(request)
    if schema is not None:
        tools.append({"name": STRUCTURED_TOOL, "description": "Give the final answer as JSON matching this schema.",
                      "input_schema": schema})
    if tools:
        body["tools"] = tools
        choice = encode_tool_choice(request, answer_only=schema is not None and not request.tools)
        if choice is not None:
            body["tool_choice"] = choice
    optional = {"temperature": request.temperature, "top_p": request.top_p, "stop_sequences": request.stop}
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.user:
        body["metadata"] = {"user_id": request.user}
    encode_reasoning(body, request.reasoning)
    if stream:
        body["stream"] = True
    body.update(request.extra)
    return body


def encode_system(messages: list[Message]) -> str | list[dict[str, Any]]:
    """A plain string, unless the client sent blocks (several, or with cache breakpoints):
    then the same blocks."""
    parts = [p for m in messages for p in m.content if isinstance(p, TextPart) and p.text]
    if (len(parts) > 1 and any(p.cache_control for p in parts)) or any(p.cache_control for p in parts):
        return [_cached({"type": "text", "text": p.text}, p.cache_control) for p in parts]
    return "\n\n".join(p.text for p in parts)


def encode_reasoning(body: dict[str, Any], reasoning: Reasoning | None) -> None:
    """Thinking (a budget, adaptive, or disabled) and ``output_config.effort``."""
    if reasoning is None:
        return
    if reasoning.mode == "enabled" or (reasoning.mode is None and reasoning.budget_tokens is not None):
        body["thinking"] = {"type": "enabled", "budget_tokens": reasoning.budget_tokens or 1024}
    elif reasoning.mode is not None:
        body["thinking"] = {"type": reasoning.mode}
    if reasoning.effort is not None:
        effort = "low" if reasoning.effort == "minimal" else reasoning.effort
        body["output_config"] = {**body.get("output_config", {}), "effort": effort}


def _cached(block: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def structured_schema(request: ChatRequest) -> dict[str, Any] | None:
    fmt = request.response_format or {}
    if fmt.get("type") == "json_schema":
        schema = as_dict(fmt.get("json_schema")).get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    return None


def encode_tool_choice(request: ChatRequest, *, answer_only: bool = False) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any]
    if answer_only:
        out = {"type": "tool", "name": STRUCTURED_TOOL}
    elif choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": choice}
    if request.parallel_tool_calls is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None and not answer_only:
        return None  # leave Anthropic's default (auto)
    return out


def encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Tool results travel as user turns; consecutive turns of one role merge into one."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = encode_blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def encode_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        plain = all(isinstance(p, TextPart) and p.cache_control is None for p in message.content)
        content: str | list[dict[str, Any]] = message.text_content if plain else \
            [encode_part(p) for p in message.content]
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": safe_id(message.tool_call_id or ""),
                                  "content": content}
        if message.is_error:
            result["is_error"] = True
        return [_cached(result, message.cache_control)]
    # Signed thinking goes back first and unchanged: Anthropic checks it with tool use.
    blocks = [encode_thinking(t) for t in message.thinking if t.signature is not None or t.redacted is not None]
    blocks += [encode_part(p) for p in message.content if not (isinstance(p, TextPart) and not p.text)]
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        blocks.append(_cached({"type": "tool_use", "id": safe_id(call.id), "name": call.name, "input": arguments},
                              call.cache_control))
    return blocks


def encode_thinking(thinking: Thinking) -> dict[str, Any]:
    if thinking.redacted is not None:
        return {"type": "redacted_thinking", "data": thinking.redacted}
    return {"type": "thinking", "thinking": thinking.text, "signature": thinking.signature}


def safe_id(call_id: str) -> str:
    """Anthropic accepts tool ids of ``[A-Za-z0-9_-]`` only; ids from other providers
    (Gemini's carry a signature after ``~``) are mapped the same way in calls and results."""
    return _UNSAFE_ID.sub("_", call_id.split("~", 1)[0]) or "toolu_0"


def encode_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return _cached({"type": "text", "text": part.text}, part.cache_control)
    if part.url.startswith("data:"):
        header, _, data = part.url.partition(",")
        media_type = header.removeprefix("data:").split(";")[0] or "image/png"
        return _cached({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}},
                       part.cache_control)
    return _cached({"type": "image", "source": {"type": "url", "url": part.url}}, part.cache_control)
