"""OpenAI Responses route: `POST /v1/responses` (stateless: responses are not stored,
so the client sends the whole conversation as ``input`` items)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from corral.gateway.http import json_body, json_response
from corral.gateway.pipeline import CallPipeline
from corral.gateway.responses_format import (
    ResponseEventWriter,
    ResponseShape,
    response_json,
    to_neutral,
    validate_responses,
)
from corral.ids import new_id


class ResponsesApi:
    def __init__(self, pipeline: CallPipeline) -> None:
        self.pipeline = pipeline

    async def create(self, request: Request) -> Response:
        started = time.perf_counter()
        principal = await self.pipeline.authenticate(request)
        body = validate_responses(await json_body(request))
        chat = to_neutral(body)  # before admission: a request we refuse as invalid uses no rate limit
        target, call = await self.pipeline.open(request, principal, body.model, "responses", stream=body.stream,
                                                started=started, chat=chat)
        shape = ResponseShape(body, id=f"resp_{new_id()}")
        if body.stream:
            return await self.pipeline.stream(target, chat, call, ResponseEventWriter(shape))
        result = await self.pipeline.complete(target, chat, call)
        return json_response(response_json(result, shape))
