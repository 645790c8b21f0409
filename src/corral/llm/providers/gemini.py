"""Google Gemini (Generative Language API): ``models/{m}:generateContent`` and
``:streamGenerateContent?alt=sse``, functionCall / functionResponse parts,
``systemInstruction``, ``usageMetadata``; the key travels in ``x-goog-api-key``.

Gemini has no tool-call finish reason (a call ends with ``STOP``), so a response with
function calls finishes as ``tool_calls``. ``candidatesTokenCount`` excludes thinking
tokens, so ``output_tokens`` adds ``thoughtsTokenCount`` (as OpenAI's count does).
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import AsyncIterator
from typing import Any

from corral.config.schema import ProviderConfig
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
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}

EMBED_BATCH = 100

# Gemini 3 signs its function calls (`thoughtSignature`) and refuses a history whose
# calls come back unsigned. The neutral ToolCall has no slot for it, so the signature
# rides inside the call id (clients echo ids verbatim) and is unpacked on the way back.
SIGNATURE_MARK = "~sig~"
# Google's documented stand-in for a call whose signature is unknown (history written
# by another model, or compacted).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_UNSIGNED_MODELS = re.compile(r"^(models/)?gemini-[12][.-]")

# JSON Schema keywords Gemini's OpenAPI-subset `parameters` rejects.
_UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties", "$id", "strict"})


def parse_error(body: Any) -> tuple[str | None, str | None]:
    """``{"error": {"code": 400, "message", "status", "details": [{"reason"}]}}``."""
    error = as_dict(as_dict(body).get("error"))
    message = error.get("message")
    code = error.get("status")
    for detail in as_list(error.get("details")):
        if as_dict(detail).get("reason"):
            code = as_dict(detail)["reason"]
    text = str(message) if message else None
    if text and "exceeds the maximum number of tokens" in text:
        code = "context_length_exceeded"
    return text, (str(code) if code else None)


class GeminiProvider:
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
        headers = {"x-goog-api-key": api_key} if api_key else {}
        self._http = HttpClient(
            name,
            config,
            base_url=base_url,
            headers=headers,
            api_key=api_key,
            network=network,
            error_parser=parse_error,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(self, request: ChatRequest) -> ChatResult:
        path = f"/models/{model_id(request.model)}:generateContent"
        payload = build_body(request)
        body = as_dict(await self._http.request_json("POST", path, json_body=payload, seconds=request.timeout))
        state = _Decoder(request.model)
        events = state.feed(body)
        if not state.seen_candidate:
            raise self._http.bad_payload("no candidates and no block reason in the response")
        message = Message(role="assistant")
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        if text:
            message.content.append(TextPart(text))
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        if reasoning:
            message.reasoning = reasoning
        message.tool_calls = [
            ToolCall(id=e.id or "", name=e.name or "", arguments=e.arguments)
            for e in events
            if isinstance(e, ToolCallDelta)
        ]
        return ChatResult(
            message=message,
            finish_reason=state.finish or "stop",
            usage=state.usage or Usage(),
            model=state.model,
            id=body.get("responseId") if isinstance(body.get("responseId"), str) else None,
        )

    async def stream(self, request: ChatRequest, *, read_ahead: ReadAhead | None = None) -> AsyncIterator[StreamEvent]:
        path = f"/models/{model_id(request.model)}:streamGenerateContent"
        state = _Decoder(request.model)
        async with self._http.open(
            "POST", path, json_body=build_body(request), params={"alt": "sse"}, seconds=request.timeout
        ) as resp:
            async for sse in self._http.sse(resp, read_ahead):
                chunk = as_dict(self._http.event_json(sse))
                if "error" in chunk:
                    status = as_int(as_dict(chunk["error"]).get("code")) or 500
                    raise self._http.error_from(status, sse.data.encode())
                for event in state.feed(chunk):
                    yield event
        if state.finish is None:
            raise self._http.truncated()
        if state.usage is not None:
            yield UsageEvent(state.usage)
        yield FinishEvent(state.finish, model=state.model)

    async def list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        params = {"pageSize": "1000"}
        for _ in range(20):  # bounded pagination
            body = as_dict(await self._http.request_json("GET", "/models", params=params))
            for item in as_list(body.get("models")):
                item = as_dict(item)
                if isinstance(item.get("name"), str):
                    models.append(
                        ModelInfo(
                            id=model_id(item["name"]),
                            owned_by="google",
                            context_window=as_int(item.get("inputTokenLimit")) or None,
                            max_output_tokens=as_int(item.get("outputTokenLimit")) or None,
                        )
                    )
            if not body.get("nextPageToken"):
                break
            params = {"pageSize": "1000", "pageToken": str(body["nextPageToken"])}
        return models

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        name = f"models/{model_id(model)}"
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):  # the API takes at most 100 per call
            batch = texts[start : start + EMBED_BATCH]
            requests = [{"model": name, "content": {"parts": [{"text": t}]}} for t in batch]
            body = as_dict(
                await self._http.request_json("POST", f"/{name}:batchEmbedContents", json_body={"requests": requests})
            )
            values = [as_dict(e).get("values") for e in as_list(body.get("embeddings"))]
            if len(values) != len(batch) or not all(isinstance(v, list) for v in values):
                raise self._http.bad_payload(f"expected {len(batch)} embeddings, got {len(values)}")
            vectors += [[float(x) for x in v] for v in values if isinstance(v, list)]
        # The embeddings API reports no token count.
        return vectors, 0


class _Decoder:
    """Folds GenerateContentResponse objects (one, or a stream of them) into events."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.finish: FinishReason | None = None
        self.seen_candidate = False
        self._calls = 0

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if isinstance(chunk.get("modelVersion"), str):
            self.model = chunk["modelVersion"]
        if "usageMetadata" in chunk:
            self.usage = parse_usage(chunk["usageMetadata"])
        events: list[StreamEvent] = []
        candidates = as_list(chunk.get("candidates"))
        if not candidates and as_dict(chunk.get("promptFeedback")).get("blockReason"):
            self.seen_candidate, self.finish = True, "content_filter"
        for candidate in candidates[:1]:
            self.seen_candidate = True
            candidate = as_dict(candidate)
            for part in as_list(as_dict(candidate.get("content")).get("parts")):
                events.extend(self._part(as_dict(part)))
            reason = candidate.get("finishReason")
            if reason and reason != "FINISH_REASON_UNSPECIFIED":
                self.finish = _FINISH.get(str(reason), "stop")
        if self.finish == "stop" and self._calls:
            self.finish = "tool_calls"
        return events

    def _part(self, part: dict[str, Any]) -> list[StreamEvent]:
        if "functionCall" in part:
            call = as_dict(part["functionCall"])
            index = self._calls
            self._calls += 1
            call_id = pack_call_id(str(call.get("id") or f"call_{index}_{call.get('name', '')}"),
                                   part.get("thoughtSignature"))
            arguments = json.dumps(call.get("args") or {})
            return [ToolCallDelta(index=index, id=str(call_id), name=str(call.get("name") or ""), arguments=arguments)]
        text = part.get("text")
        if isinstance(text, str) and text:
            return [ReasoningDelta(text) if part.get("thought") else TextDelta(text)]
        return []


def parse_usage(raw: Any) -> Usage:
    raw = as_dict(raw)
    thoughts = as_int(raw.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=as_int(raw.get("promptTokenCount")),
        output_tokens=as_int(raw.get("candidatesTokenCount")) + thoughts,
        cached_input_tokens=as_int(raw.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def model_id(model: str) -> str:
    return model.removeprefix("models/")


# ---- encoding ---------------------------------------------------------------


def build_body(request: ChatRequest) -> dict[str, Any]:
    system = "\n\n".join(m.text_content for m in request.messages if m.role == "system" and m.text_content)
    contents = encode_contents([m for m in request.messages if m.role != "system"], request.model)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {"name": t.name, "description": t.description, "parameters": clean_schema(t.parameters)}
                    for t in request.tools
                ]
            }
        ]
    if request.tool_choice is not None and request.tools:
        body["toolConfig"] = {"functionCallingConfig": encode_tool_choice(request.tool_choice)}
    config = generation_config(request)
    if config:
        body["generationConfig"] = config
    body.update(request.extra)
    return body


def encode_tool_choice(choice: str) -> dict[str, Any]:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    return {"mode": "ANY", "allowedFunctionNames": [choice]}


def generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "maxOutputTokens": request.max_tokens,
        "stopSequences": request.stop,
        "seed": request.seed,
    }
    out: dict[str, Any] = {k: v for k, v in config.items() if v is not None}
    fmt = request.response_format or {}
    if fmt.get("type") == "json_object":
        out["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        out["responseMimeType"] = "application/json"
        schema = as_dict(fmt.get("json_schema")).get("schema")
        if isinstance(schema, dict):
            out["responseJsonSchema"] = schema
    return out


def clean_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: clean_schema(v) for k, v in schema.items() if k not in _UNSUPPORTED_SCHEMA_KEYS}
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema


def pack_call_id(call_id: str, signature: Any) -> str:
    return f"{call_id}{SIGNATURE_MARK}{signature}" if isinstance(signature, str) and signature else call_id


def unpack_call_id(packed: str) -> tuple[str | None, str | None]:
    """(the id Gemini issued, if any; the call's signature, if any)."""
    base, _, signature = packed.partition(SIGNATURE_MARK)
    issued = base if base and not base.startswith("call_") else None  # "call_..." ids are ours
    return issued, signature or None


def encode_contents(messages: list[Message], model: str = "") -> list[dict[str, Any]]:
    """Roles are ``user`` and ``model``; function responses travel as user turns and
    consecutive turns of one role merge (parallel calls are answered in one turn)."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    sign = not _UNSIGNED_MODELS.match(model)
    out: list[dict[str, Any]] = []
    for message in messages:
        role = "model" if message.role == "assistant" else "user"
        parts = encode_parts(message, names)
        if not parts:
            continue
        calls = [p for p in parts if "functionCall" in p]
        if sign and calls and not any("thoughtSignature" in p for p in calls):
            calls[0]["thoughtSignature"] = SKIP_SIGNATURE
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def encode_parts(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        text = message.text_content
        try:
            result = json.loads(text)
        except ValueError:
            result = None
        response = result if isinstance(result, dict) else {"result": text}
        function_response: dict[str, Any] = {"name": message.name or names.get(call_id, ""), "response": response}
        issued, _ = unpack_call_id(call_id)
        if issued:
            function_response["id"] = issued
        return [{"functionResponse": function_response}]
    parts = [encode_part(p) for p in message.content if not (isinstance(p, TextPart) and not p.text)]
    for call in message.tool_calls:
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            args = {}
        function_call: dict[str, Any] = {"name": call.name, "args": args}
        issued, signature = unpack_call_id(call.id)
        if issued:
            function_call["id"] = issued
        part: dict[str, Any] = {"functionCall": function_call}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def encode_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url.startswith("data:"):
        header, _, data = part.url.partition(",")
        mime = header.removeprefix("data:").split(";")[0] or "image/png"
        return {"inlineData": {"mimeType": mime, "data": data}}
    mime = mimetypes.guess_type(part.url)[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": part.url}}
