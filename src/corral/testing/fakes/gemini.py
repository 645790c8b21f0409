"""A fake Gemini (Generative Language API v1beta) server: ``models/{m}:generateContent``,
``:streamGenerateContent`` (``?alt=sse`` frames, else one JSON array), ``:embedContent``,
``:batchEmbedContents``, ``GET models`` and ``GET models/{m}``.

Like the real API, a wrong key is answered with HTTP 400 and reason ``API_KEY_INVALID``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from corral.testing.fakes._script import Reply, ReplyToolCall, fake_embedding, text_pieces
from corral.testing.fakes._server import FakeUpstream, Frames

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


class FakeGemini(FakeUpstream):
    prefix = "/v1beta"
    default_models = ("gemini-2.0-flash", "gemini-2.5-pro", "text-embedding-004")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1beta/models", self._list, methods=["GET"]),
            Route("/v1beta/models/{target:path}", self._model, methods=["GET", "POST"]),
        ]

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        return {"error": {"code": status, "message": message, "status": error_type or _STATUS.get(status, "UNKNOWN")}}

    def _denied(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if key == self.api_key:
            return None
        body = self.error_body(400, "API key not valid. Please pass a valid API key.", None)
        body["error"]["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com"}
        ]
        return JSONResponse(body, status_code=400)

    def _model_info(self, name: str) -> dict[str, Any]:
        embedding = "embedding" in name
        methods = ["embedContent", "batchEmbedContents"] if embedding else ["generateContent", "countTokens"]
        return {
            "name": f"models/{name}", "version": "001", "displayName": name, "description": "fake model",
            "inputTokenLimit": 2048 if embedding else 1048576, "outputTokenLimit": 1 if embedding else 8192,
            "supportedGenerationMethods": methods,
        }

    async def _list(self, request: Request) -> Response:
        self.record(request, None)
        denied = self._denied(request)
        if denied is not None:
            return denied
        return JSONResponse({"models": [self._model_info(m) for m in self.models]})

    async def _model(self, request: Request) -> Response:
        body, invalid = await self.read_json(request)
        self.record(request, body)
        if invalid is not None:
            return invalid
        denied = self._denied(request)
        if denied is not None:
            return denied
        model, _, method = str(request.path_params["target"]).partition(":")
        if request.method == "GET" and not method:
            if model not in self.models:
                return JSONResponse(self.error_body(404, f"models/{model} is not found", None), status_code=404)
            return JSONResponse(self._model_info(model))
        body = body if isinstance(body, dict) else {}
        if method in ("generateContent", "streamGenerateContent"):
            if not isinstance(body.get("contents"), list):
                return JSONResponse(self.error_body(400, "* GenerateContentRequest.contents: contents is not "
                                                         "specified", None), status_code=400)
            reply = self.next_reply()
            call = _Call(self, reply, body, model)
            if method == "streamGenerateContent" and request.query_params.get("alt") != "sse":
                return await self.respond(request, reply, stream=False, complete=call.array, frames=call.frames)
            return await self.respond(
                request, reply, stream=method == "streamGenerateContent", complete=call.response, frames=call.frames
            )
        if method == "embedContent":
            return JSONResponse({"embedding": {"values": _embed(body)}})
        if method == "batchEmbedContents":
            requests = [r for r in body.get("requests") or [] if isinstance(r, dict)]
            return JSONResponse({"embeddings": [{"values": _embed(r)} for r in requests]})
        return JSONResponse(self.error_body(404, f"method {method!r} not found", None), status_code=404)


class _Call:
    def __init__(self, fake: FakeGemini, reply: Reply, body: dict[str, Any], model: str) -> None:
        self.reply = reply
        self.model = reply.model or model
        self.response_id = f"fake-response-{fake.next_id()}"
        contents = [c for c in body["contents"] if isinstance(c, dict)]
        system = _text(body.get("systemInstruction"))
        prompt = " ".join([system, *(_text(c) for c in contents)])
        last_user = next((_text(c) for c in reversed(contents) if c.get("role", "user") == "user" and _text(c)), "")
        self.text = reply.resolved_text(last_user)
        self.input_tokens, self.output_tokens = reply.counts(prompt, self.text)
        self.finish = _FINISH.get(reply.neutral_finish(), "STOP")

    def usage(self) -> dict[str, Any]:
        thoughts = self.reply.reasoning_tokens
        usage = {
            "promptTokenCount": self.input_tokens,
            "candidatesTokenCount": max(self.output_tokens - thoughts, 0),
            "totalTokenCount": self.input_tokens + self.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.input_tokens}],
        }
        if self.reply.cached_tokens:
            usage["cachedContentTokenCount"] = self.reply.cached_tokens
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def _chunk(self, parts: list[dict[str, Any]], *, final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = self.finish
        chunk: dict[str, Any] = {"candidates": [candidate]}
        chunk["usageMetadata"] = self.usage() if final else {"promptTokenCount": self.input_tokens,
                                                              "totalTokenCount": self.input_tokens}
        chunk["modelVersion"] = self.model
        chunk["responseId"] = self.response_id
        return chunk

    def parts(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if self.reply.reasoning:
            parts.append({"text": self.reply.reasoning, "thought": True})
        if self.text:
            parts.append({"text": self.text})
        parts += [_function_call(c) for c in self.reply.tool_calls]
        return parts

    def response(self) -> dict[str, Any]:
        return self._chunk(self.parts(), final=True)

    def _stream_chunks(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        body: list[dict[str, Any]] = []
        if self.reply.reasoning:
            body.append(self._chunk([{"text": self.reply.reasoning, "thought": True}], final=False))
        pieces = text_pieces(self.text, self.reply.chunk_chars)
        calls = [_function_call(c) for c in self.reply.tool_calls]
        body += [self._chunk([{"text": p}], final=False) for p in pieces]
        if calls:
            body.append(self._chunk(calls, final=False))
        # The last chunk carries finishReason and the full usage (with an empty text part).
        return body, self._chunk([{"text": ""}], final=True)

    def frames(self) -> Frames:
        body, final = self._stream_chunks()
        return Frames([_sse(c) for c in body], [_sse(final)])

    def array(self) -> list[dict[str, Any]]:
        body, final = self._stream_chunks()
        return [*body, final]


def _function_call(reply_call: ReplyToolCall) -> dict[str, Any]:
    call: dict[str, Any] = {"name": reply_call.name, "args": reply_call.arguments_object}
    if reply_call.id:
        call["id"] = reply_call.id
    part: dict[str, Any] = {"functionCall": call}
    if reply_call.signature:
        part["thoughtSignature"] = reply_call.signature
    return part


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


def _text(content: Any) -> str:
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    return " ".join(str(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def _embed(request: dict[str, Any]) -> list[float]:
    dims = request.get("outputDimensionality")
    return fake_embedding(_text(request.get("content")), dims if isinstance(dims, int) else 8)
