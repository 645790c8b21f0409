"""A fake Anthropic Messages server: ``/v1/messages`` (stream and not) and ``/v1/models``.

Streams follow the documented order: ``message_start``, ``ping``, per content block
``content_block_start`` / ``content_block_delta``... / ``content_block_stop``, then
``message_delta`` (stop reason, cumulative usage) and ``message_stop``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from corral.testing.fakes._script import Reply, halves, text_pieces
from corral.testing.fakes._server import FakeUpstream, Frames

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class FakeAnthropic(FakeUpstream):
    prefix = ""  # the SDK's base_url has no /v1
    default_models = ("claude-3-5-haiku-latest", "claude-sonnet-4-5")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ]

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        kind = error_type or _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}

    def error_event(self, body: Any) -> bytes:
        return _event("error", {k: v for k, v in body.items() if k != "type"} if isinstance(body, dict) else {})

    def _invalid(self, request: Request, body: Any) -> Response | None:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return JSONResponse(self.error_body(401, "invalid x-api-key", None), status_code=401)
        if not request.headers.get("anthropic-version"):
            return JSONResponse(self.error_body(400, "anthropic-version: header is required", None), status_code=400)
        if body is None:
            return None
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return JSONResponse(self.error_body(400, f"{key}: Field required", None), status_code=400)
        return None

    async def _messages(self, request: Request) -> Response:
        body, invalid = await self.read_json(request)
        self.record(request, body)
        if invalid is not None:
            return invalid
        if not isinstance(body, dict):
            return JSONResponse(self.error_body(400, "request body must be a JSON object", None), status_code=400)
        problem = self._invalid(request, body)
        if problem is not None:
            return problem
        reply = self.next_reply()
        call = _Call(self, reply, body)
        return await self.respond(
            request, reply, stream=bool(body.get("stream")), complete=call.message, frames=call.frames
        )

    async def _models(self, request: Request) -> Response:
        self.record(request, None)
        problem = self._invalid(request, None)
        if problem is not None:
            return problem
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.models
        ]
        return JSONResponse({
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        })


class _Call:
    def __init__(self, fake: FakeAnthropic, reply: Reply, body: dict[str, Any]) -> None:
        self.reply = reply
        self.id = f"msg_fake{fake.next_id()}"
        self.model = reply.model or str(body.get("model"))
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = " ".join([_text(body.get("system")), *(_text(m.get("content")) for m in messages)])
        last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        self.text = reply.resolved_text(last_user)
        self.input_tokens, self.output_tokens = reply.counts(prompt, self.text)
        self.stop_reason = _STOP_REASONS.get(reply.neutral_finish(), reply.neutral_finish())
        self.call_ids = [c.id or f"toolu_fake{i}" for i, c in enumerate(reply.tool_calls)]

    def usage(self, output_tokens: int) -> dict[str, Any]:
        # Anthropic's input_tokens excludes what was read from the cache.
        return {
            "input_tokens": max(self.input_tokens - self.reply.cached_tokens, 0),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.reply.cached_tokens,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.reply.reasoning:
            blocks.append({"type": "thinking", "thinking": self.reply.reasoning, "signature": "sig-fake"})
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        for cid, call in zip(self.call_ids, self.reply.tool_calls, strict=True):
            blocks.append({"type": "tool_use", "id": cid, "name": call.name, "input": call.arguments_object})
        return blocks

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks(),
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage(self.output_tokens),
        }

    def frames(self) -> Frames:
        start = {**self.message(), "content": [], "stop_reason": None, "usage": self.usage(1)}
        body = [_event("message_start", {"message": start}), _event("ping", {})]
        for index, block in enumerate(self.blocks()):
            body += self._block_events(index, block)
        final = [
            _event("message_delta", {
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": self.output_tokens},
            }),
            _event("message_stop", {}),
        ]
        return Frames(body, final)

    def _block_events(self, index: int, block: dict[str, Any]) -> list[bytes]:
        kind = block["type"]
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in text_pieces(block["text"], self.reply.chunk_chars)]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in text_pieces(block["thinking"], None)]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in halves(json.dumps(block["input"]))]
        events = [_event("content_block_start", {"index": index, "content_block": opening})]
        events += [_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(_event("content_block_stop", {"index": index}))
        return events


def _event(name: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps({"type": name, **data})
    return f"event: {name}\ndata: {payload}\n\n".encode()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""
