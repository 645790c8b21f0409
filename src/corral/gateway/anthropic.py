"""Anthropic-compatible routes: `POST /v1/messages`, `POST /v1/messages/count_tokens`.

Any configured model or agent answers, whatever its upstream wire API: the request
goes through the neutral core like every other surface."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from corral.gateway.anthropic_format import (
    EventWriter,
    message_json,
    to_messages,
    to_neutral,
    to_tools,
    validate_count_tokens,
    validate_messages,
)
from corral.gateway.call import Models
from corral.gateway.errors import ApiError
from corral.gateway.http import json_body, json_response
from corral.gateway.pipeline import CallPipeline
from corral.ids import new_id
from corral.llm import errors
from corral.llm.tokens import estimate_tokens


def anthropic_error(exc: errors.ProviderError) -> ApiError:
    """Anthropic's documented statuses: an upstream that is down after the router's
    retries is reported as 529 ``overloaded_error`` (transient; SDKs retry it), an
    upstream timeout as 504 ``timeout_error``."""
    error = ApiError.from_provider(exc)
    if isinstance(exc, errors.UpstreamUnavailableError):
        error.status, error.type = 529, "overloaded_error"
    elif isinstance(exc, errors.UpstreamTimeout):
        error.status, error.type = 504, "timeout_error"
    return error


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"model: {model} (no such model or agent on this gateway)", type="not_found_error")


class MessagesApi:
    def __init__(self, pipeline: CallPipeline, models: Models) -> None:
        self.pipeline = pipeline
        self.models = models

    async def create(self, request: Request) -> Response:
        started = time.perf_counter()
        principal = await self.pipeline.authenticate(request)
        body = validate_messages(await json_body(request))
        chat = to_neutral(body)  # before admission: a request we refuse as invalid uses no rate limit
        target, call = await self.pipeline.open(request, principal, body.model, "anthropic", stream=body.stream,
                                                started=started, chat=chat)
        message_id = f"msg_{new_id()}"
        if body.stream:
            writer = EventWriter(id=message_id, model=body.model)
            return await self.pipeline.stream(target, chat, call, writer, anthropic_error)
        result = await self.pipeline.complete(target, chat, call, anthropic_error)
        return json_response(message_json(result, id=message_id, model=body.model))

    async def count_tokens(self, request: Request) -> Response:
        await self.pipeline.authenticate(request)  # not a model call (no admission), but never open to anyone
        body = validate_count_tokens(await json_body(request))
        if self.models.resolve(body.model) is None:
            raise model_not_found(body.model)
        tools = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                 for t in body.tools or []]
        to_tools(body.tools)  # same validation as /v1/messages
        # No tokenizer for every upstream: about four characters a token, stable and cheap.
        return json_response({"input_tokens": max(1, estimate_tokens(to_messages(body), tools))})
