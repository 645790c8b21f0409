"""OpenAI Responses route: `POST /v1/responses` (stateless: responses are not stored,
so the client sends the whole conversation as ``input`` items)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.gateway.openai import begin_call, complete_chat, json_response, stream_chat
from corral.gateway.openai_format import json_body
from corral.gateway.responses_format import (
    ResponseEventWriter,
    ResponseShape,
    response_json,
    to_neutral,
    validate_responses,
)
from corral.gateway.state import Gateway
from corral.ids import new_id


def routes(gateway: Gateway) -> list[BaseRoute]:
    async def create_response(request: Request) -> Response:
        started = time.perf_counter()
        body = validate_responses(await json_body(request))
        chat = to_neutral(body)  # before admit: a request we refuse as invalid uses no rate limit
        target, record = await begin_call(gateway, request, body.model, "responses", stream=body.stream,
                                          started=started)
        shape = ResponseShape(body, id=f"resp_{new_id()}")
        if body.stream:
            return await stream_chat(gateway, request, target, chat, record, ResponseEventWriter(shape))
        result = await complete_chat(gateway, request, target, chat, record)
        return json_response(response_json(result, shape))

    return [Route("/v1/responses", create_response, methods=["POST"])]
