"""A fake OpenAI Chat Completions server: ``/v1/chat/completions`` (stream and not),
``/v1/models``, ``/v1/embeddings``; Azure-style ``/openai/deployments/<d>/...`` too."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from corral.testing.fakes._script import Reply, fake_embedding, float32_base64, halves, text_pieces
from corral.testing.fakes._server import FakeUpstream, Frames

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                404: "invalid_request_error", 429: "requests"}
_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


class FakeOpenAI(FakeUpstream):
    prefix = "/v1"
    default_models = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for base in ("/v1", "", "/openai/deployments/{deployment}"):
            routes += [
                Route(f"{base}/chat/completions", self._chat, methods=["POST"]),
                Route(f"{base}/models", self._models, methods=["GET"]),
                Route(f"{base}/embeddings", self._embeddings, methods=["POST"]),
            ]
        routes.append(Route("/openai/models", self._models, methods=["GET"]))  # an Azure resource's models
        return routes

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        return {
            "error": {
                "message": message,
                "type": error_type or _ERROR_TYPES.get(status, "server_error"),
                "param": None,
                "code": _ERROR_CODES.get(status),
            }
        }

    def _denied(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        header = request.headers.get("authorization", "")
        if header == f"Bearer {self.api_key}" or request.headers.get("api-key") == self.api_key:
            return None
        message = "Incorrect API key provided. You can find your API key at your provider's dashboard."
        return JSONResponse(self.error_body(401, message, None), status_code=401)

    async def _chat(self, request: Request) -> Response:
        body, invalid = await self.read_json(request)
        self.record(request, body)
        if invalid is not None:
            return invalid
        denied = self._denied(request)
        if denied is not None:
            return denied
        if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
            return JSONResponse(self.error_body(400, "you must provide a model parameter and messages", None), 400)
        reply = self.next_reply()
        call = _Call(self, reply, body)
        return await self.respond(request, reply, stream=bool(body.get("stream")), complete=call.completion,
                                  frames=call.frames)

    async def _models(self, request: Request) -> Response:
        self.record(request, None)
        denied = self._denied(request)
        if denied is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _embeddings(self, request: Request) -> Response:
        body, invalid = await self.read_json(request)
        self.record(request, body)
        if invalid is not None:
            return invalid
        denied = self._denied(request)
        if denied is not None:
            return denied
        body = body if isinstance(body, dict) else {}
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []]
        dimensions = body.get("dimensions")
        dims = dimensions if isinstance(dimensions, int) else 8
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = fake_embedding(text, dims)
            encoded = float32_base64(vector) if as_base64 else vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(max(1, len(t.split())) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model", ""),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class _Call:
    """Renders one reply for one request, in both the stream and non-stream shape."""

    def __init__(self, fake: FakeOpenAI, reply: Reply, body: dict[str, Any]) -> None:
        self.reply = reply
        self.body = body
        self.id = f"chatcmpl-fake{fake.next_id()}"
        self.created = int(time.time())
        self.model = reply.model or str(body.get("model"))
        prompt = " ".join(_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
        self.text = reply.resolved_text(_last_user_text(body["messages"]))
        self.input_tokens, self.output_tokens = reply.counts(prompt, self.text)
        self.finish = {"tool_calls": "tool_calls"}.get(reply.neutral_finish(), reply.neutral_finish())
        self.call_ids = [c.id or f"call_fake{i}" for i, c in enumerate(reply.tool_calls)]

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reply.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None, "refusal": None,
                                   "annotations": []}
        if self.reply.reasoning:
            message["reasoning_content"] = self.reply.reasoning
        if self.reply.tool_calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for cid, c in zip(self.call_ids, self.reply.tool_calls, strict=True)
            ]
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish}],
            "usage": self.usage(), "service_tier": "default", "system_fingerprint": "fp_fake",
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "service_tier": "default", "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return _sse(chunk)

    @property
    def _include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def frames(self) -> Frames:
        body = [self._chunk({"role": "assistant", "content": "", "refusal": None})]
        if self.reply.reasoning:
            body += [self._chunk({"reasoning_content": p}) for p in text_pieces(self.reply.reasoning, None)]
        body += [self._chunk({"content": p}) for p in text_pieces(self.text, self.reply.chunk_chars)]
        for i, (cid, call) in enumerate(zip(self.call_ids, self.reply.tool_calls, strict=True)):
            opening = {"index": i, "id": cid, "type": "function", "function": {"name": call.name, "arguments": ""}}
            body.append(self._chunk({"tool_calls": [opening]}))
            for fragment in halves(call.arguments_json):
                body.append(self._chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}))
        final = [self._chunk({}, self.finish)]
        if self._include_usage:
            final.append(_sse({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "service_tier": "default", "system_fingerprint": "fp_fake", "choices": [], "usage": self.usage(),
            }))
        final.append(b"data: [DONE]\n\n")
        return Frames(body, final)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""
