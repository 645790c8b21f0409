"""OpenAI Chat Completions, and every server that speaks it (Mistral, Groq, Cerebras,
DeepSeek, OpenRouter, Together, xAI, Fireworks, vLLM, llama.cpp, Ollama's /v1, and
Azure-style deployments with an ``api-key`` header and ``?api-version``)."""

from __future__ import annotations

import json
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
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

MAX_ID = 40

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


class OpenAIProvider:
    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        base_url: str,
        api_key: str | None = None,
        azure: bool = False,
        network: Network | None = None,
    ) -> None:
        self.name = name
        # OpenAI itself rejects `max_tokens` for reasoning models; compatible servers
        # mostly only know `max_tokens`, and Azure learnt the new name in 2024-09-01.
        modern = config.type == "openai" or (azure and (config.api_version or "") >= "2024-09-01")
        self._max_tokens_field = "max_completion_tokens" if modern else "max_tokens"
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if api_key:
            if azure:
                headers["api-key"] = api_key
            else:
                headers["authorization"] = f"Bearer {api_key}"
        if azure and config.api_version:
            params["api-version"] = config.api_version
        # An Azure deployment URL has no /models; the resource's /openai/models lists them.
        resource, found, _ = base_url.rstrip("/").partition("/deployments/")
        self._models_path = f"{resource}/models" if azure and found else "/models"
        self._http = HttpClient(
            name, config, base_url=base_url, headers=headers, api_key=api_key, network=network, params=params
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(self, request: ChatRequest) -> ChatResult:
        body = await self._http.request_json(
            "POST", "/chat/completions", json_body=build_body(request, self._max_tokens_field), seconds=request.timeout
        )
        return self._parse_result(body, request.model)

    async def stream(self, request: ChatRequest, *, read_ahead: ReadAhead | None = None) -> AsyncIterator[StreamEvent]:
        payload = build_body(request, self._max_tokens_field, stream=True)
        state = _StreamState(model=request.model)
        async with self._http.open("POST", "/chat/completions", json_body=payload, seconds=request.timeout) as resp:
            events = self._http.sse(resp, read_ahead)
            async for sse in events:
                if sse.data == "[DONE]" or sse.data.strip() == "[DONE]":
                    state.done = True
                    break
                chunk = self._http.event_json(sse)
                for event in self._chunk_events(chunk, state):
                    yield event
            if state.done:
                await self._http.drain(events, response=resp)
        if state.finish is None:
            if not state.done:
                raise self._http.truncated()
            state.finish = "stop"  # a server that ends with [DONE] but never names a reason
        if state.usage is not None:
            yield UsageEvent(state.usage)
        yield FinishEvent(state.finish, model=state.model)

    async def list_models(self) -> list[ModelInfo]:
        body = await self._http.request_json("GET", self._models_path)
        models = []
        for item in as_list(as_dict(body).get("data")):
            item = as_dict(item)
            if isinstance(item.get("id"), str):
                models.append(ModelInfo(id=item["id"], owned_by=str(item.get("owned_by") or self.name)))
        return models

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        body = as_dict(
            await self._http.request_json(
                "POST", "/embeddings", json_body={"model": model, "input": texts, "encoding_format": "float"}
            )
        )
        data = sorted((as_dict(d) for d in as_list(body.get("data"))), key=lambda d: as_int(d.get("index")))
        vectors = [d.get("embedding") for d in data]
        if len(vectors) != len(texts) or not all(isinstance(v, list) for v in vectors):
            raise self._http.bad_payload(f"expected {len(texts)} embeddings, got {len(vectors)}")
        return [[float(x) for x in v] for v in vectors if isinstance(v, list)], as_int(
            as_dict(body.get("usage")).get("prompt_tokens")
        )

    # ---- decoding -------------------------------------------------------------

    def _parse_result(self, body: Any, model: str) -> ChatResult:
        body = as_dict(body)
        self._raise_inline_error(body)
        choices = as_list(body.get("choices"))
        if not choices:
            raise self._http.bad_payload("no choices in the completion")
        choice = as_dict(choices[0])
        raw = as_dict(choice.get("message"))
        message = Message.text("assistant", content_text(raw.get("content")))
        reasoning = raw.get("reasoning_content") or raw.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            message.reasoning = reasoning
        for call in as_list(raw.get("tool_calls")):
            function = as_dict(as_dict(call).get("function"))
            message.tool_calls.append(
                ToolCall(
                    id=str(as_dict(call).get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""),
                )
            )
        finish = _FINISH.get(str(choice.get("finish_reason")), "stop")
        return ChatResult(
            message=message,
            finish_reason=finish,
            usage=parse_usage(body.get("usage")) or Usage(),
            model=str(body.get("model") or model),
            id=body.get("id") if isinstance(body.get("id"), str) else None,
        )

    def _chunk_events(self, chunk: Any, state: _StreamState) -> list[StreamEvent]:
        """One chunk's events. Runs once per streamed token, so it checks types with
        `type(x) is` and touches only the keys a chunk has."""
        if type(chunk) is not dict:
            return []
        if chunk.get("error"):
            self._raise_inline_error(chunk)
        model = chunk.get("model")
        if model and type(model) is str:
            state.model = model
        if chunk.get("usage"):
            usage = parse_usage(chunk["usage"])
            if usage is not None:
                state.usage = usage
        # `choices` is [] on the include_usage chunk (null from some servers).
        choices = chunk.get("choices")
        if not choices or type(choices) is not list or type(choices[0]) is not dict:
            return []
        choice = choices[0]
        events: list[StreamEvent] = []
        delta = choice.get("delta")
        if delta and type(delta) is dict:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and type(reasoning) is str:
                events.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if content:
                text = content if type(content) is str else content_text(content)
                if text:
                    events.append(TextDelta(text))
            tool_calls = delta.get("tool_calls")
            if tool_calls:
                for call in as_list(tool_calls):
                    call = as_dict(call)
                    function = as_dict(call.get("function"))
                    events.append(
                        ToolCallDelta(
                            index=as_int(call.get("index")),
                            id=call.get("id") or None,
                            name=function.get("name") or None,
                            arguments=str(function.get("arguments") or ""),
                        )
                    )
        finish = choice.get("finish_reason")
        if finish:
            state.finish = _FINISH.get(str(finish), "stop")
        return events

    def _raise_inline_error(self, body: dict[str, Any]) -> None:
        # OpenRouter and some proxies report failures inside a 200 body or mid-stream.
        error = body.get("error")
        if error:
            status = as_int(as_dict(error).get("code")) or 502
            raise self._http.error_from(status, json.dumps({"error": error}).encode())


class _StreamState:
    __slots__ = ("done", "finish", "model", "usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.finish: FinishReason | None = None
        self.done = False


def content_text(content: Any) -> str:
    """Message content is a string, or (Mistral's reasoning models) a list of typed parts."""
    if isinstance(content, str):
        return content
    parts = (as_dict(p) for p in as_list(content))
    return "".join(str(p.get("text") or "") for p in parts if p.get("type") == "text")


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = as_dict(raw.get("prompt_tokens_details"))
    completion = as_dict(raw.get("completion_tokens_details"))
    cached = as_int(prompt.get("cached_tokens")) or as_int(raw.get("prompt_cache_hit_tokens"))  # DeepSeek
    return Usage(
        input_tokens=as_int(raw.get("prompt_tokens")),
        output_tokens=as_int(raw.get("completion_tokens")),
        cached_input_tokens=cached,
        reasoning_tokens=as_int(completion.get("reasoning_tokens")),
    )


# ---- encoding ---------------------------------------------------------------


def build_body(request: ChatRequest, max_tokens_field: str = "max_tokens", *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model, "messages": [encode_message(m) for m in request.messages]}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
    if request.tool_choice is not None and request.tools:  # OpenAI rejects tool_choice without tools
        choice = request.tool_choice
        body["tool_choice"] = (
            choice if choice in ("auto", "none", "required") else {"type": "function", "function": {"name": choice}}
        )
    if request.parallel_tool_calls is not None and request.tools:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        max_tokens_field: request.max_tokens,
        "stop": request.stop,
        "seed": request.seed,
        "response_format": request.response_format,
        "user": request.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    effort = reasoning_effort(request.reasoning)
    if effort is not None:
        body["reasoning_effort"] = effort
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(request.extra)
    return body


def reasoning_effort(reasoning: Reasoning | None) -> str | None:
    """OpenAI's ``reasoning_effort`` for the neutral reasoning: the effort as is (``xhigh``
    and ``max`` are ``high``), a thinking budget by size, disabled thinking as ``minimal``."""
    if reasoning is None:
        return None
    if reasoning.effort is not None:
        return "high" if reasoning.effort in ("xhigh", "max") else reasoning.effort
    if reasoning.mode == "disabled":
        return "minimal"
    if reasoning.budget_tokens is not None:
        return "low" if reasoning.budget_tokens < 4096 else "medium" if reasoning.budget_tokens < 16384 else "high"
    return None


def encode_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.role == "tool":
        if any(isinstance(p, ImagePart) for p in message.content):
            raise errors.BadRequestError("messages: an image in a tool result has no equivalent on the "
                                         "OpenAI-compatible wire (tool messages carry text only)")
        out["tool_call_id"] = wire_id(message.tool_call_id or "")
        out["content"] = f"Error: {message.text_content}" if message.is_error else message.text_content
        return out
    if message.role == "assistant":
        out["content"] = message.text_content or None
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": wire_id(c.id), "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for c in message.tool_calls
            ]
    elif any(isinstance(p, ImagePart) for p in message.content):
        out["content"] = [encode_part(p) for p in message.content]
    else:
        out["content"] = message.text_content
    if message.name:
        out["name"] = message.name
    return out


def wire_id(call_id: str) -> str:
    """OpenAI caps tool call ids at 40 characters; ids from other providers (Gemini's
    carry a signature after ``~``) are cut the same way in calls and results."""
    return call_id.split("~", 1)[0][:MAX_ID] or call_id[:MAX_ID]


def encode_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}
