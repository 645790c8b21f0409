"""Anthropic-compatible routes: `POST /v1/messages`, `POST /v1/messages/count_tokens`.

Any configured model or agent answers, whatever its upstream wire API: the request
goes through the neutral core like every other surface."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.gateway.anthropic_format import (
    EventWriter,
    message_json,
    to_messages,
    to_neutral,
    to_tools,
    validate_count_tokens,
    validate_messages,
)
from corral.gateway.errors import ApiError
from corral.gateway.openai import begin_call, complete_chat, json_response, stream_chat
from corral.gateway.openai_format import json_body
from corral.gateway.state import Gateway
from corral.ids import new_id
from corral.llm import errors
from corral.llm.types import Message


def anthropic_error(exc: errors.ProviderError) -> ApiError:
    """Anthropic's documented statuses: an upstream that is down after the router's
    retries is reported as 529 ``overloaded_error`` (transient; SDKs retry it), an
    upstream timeout as 504 ``timeout_error``."""
    error = ApiError.from_provider(exc)
    if isinstance(exc, errors.UpstreamUnavailableError):
        error.status, error.type = 529, "overloaded_error"
    elif isinstance(exc, errors.TimeoutError):
        error.status, error.type = 504, "timeout_error"
    return error


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"model: {model} (no such model or agent on this gateway)", type="not_found_error")


def estimate_input_tokens(messages: list[Message], tool_schemas: list[object]) -> int:
    """No tokenizer for every upstream: about four characters a token, stable and cheap."""
    import json

    chars = sum(len(m.text_content) + sum(len(c.arguments) + len(c.name) for c in m.tool_calls) for m in messages)
    chars += len(json.dumps(tool_schemas)) if tool_schemas else 0
    return max(1, (chars + 3) // 4)


def routes(gateway: Gateway) -> list[BaseRoute]:
    async def messages(request: Request) -> Response:
        started = time.perf_counter()
        body = validate_messages(await json_body(request))
        chat = to_neutral(body)  # before admit: a request we refuse as invalid uses no rate limit
        target, record = await begin_call(gateway, request, body.model, "anthropic", stream=body.stream,
                                          started=started)
        message_id = f"msg_{new_id()}"
        if body.stream:
            writer = EventWriter(id=message_id, model=body.model)
            return await stream_chat(gateway, request, target, chat, record, writer, anthropic_error)
        result = await complete_chat(gateway, request, target, chat, record, anthropic_error)
        return json_response(message_json(result, id=message_id, model=body.model))

    async def count_tokens(request: Request) -> Response:
        body = validate_count_tokens(await json_body(request))
        if gateway.resolve(body.model) is None:
            raise model_not_found(body.model)
        tools = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                 for t in body.tools or []]
        to_tools(body.tools)  # same validation as /v1/messages
        return json_response({"input_tokens": estimate_input_tokens(to_messages(body), list(tools))})

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
