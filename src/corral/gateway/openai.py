"""OpenAI-compatible routes: `POST /v1/chat/completions`, `GET /v1/models`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from corral.gateway.call import Models
from corral.gateway.http import json_response, read_body
from corral.gateway.openai_format import ChunkWriter, completion_json, to_neutral, validate_chat_json
from corral.gateway.pipeline import CallPipeline, model_not_found
from corral.ids import new_id
from corral.llm.types import ModelInfo


class ChatCompletionsApi:
    def __init__(self, pipeline: CallPipeline) -> None:
        self.pipeline = pipeline

    async def create(self, request: Request) -> Response:
        started = time.perf_counter()
        principal = await self.pipeline.authenticate(request)
        body = validate_chat_json(await read_body(request))
        chat = to_neutral(body)  # before admission: a request we refuse as invalid uses no rate limit
        target, call = await self.pipeline.open(request, principal, body.model, "openai", stream=body.stream,
                                                started=started, chat=chat)
        created = int(time.time())
        completion_id = f"chatcmpl-{new_id()}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            writer = ChunkWriter(id=completion_id, created=created, model=body.model, include_usage=include_usage)
            return await self.pipeline.stream(target, chat, call, writer)
        result = await self.pipeline.complete(target, chat, call)
        return json_response(completion_json(result, id=completion_id, created=created, model=body.model))


class ModelsApi:
    """`GET /v1/models` and `/v1/models/{id}`, shared by the OpenAI and Anthropic SDKs: a
    request with an ``anthropic-version`` header gets Anthropic's shapes."""

    def __init__(self, pipeline: CallPipeline, models: Models, created: int) -> None:
        self.pipeline = pipeline
        self.models = models
        self.created = created
        self.created_at = datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")

    def _json(self, model: ModelInfo, anthropic: bool) -> dict[str, object]:
        if anthropic:
            return {"type": "model", "id": model.id, "display_name": model.id, "created_at": self.created_at}
        return {"id": model.id, "object": "model", "created": self.created, "owned_by": model.owned_by}

    async def list(self, request: Request) -> Response:
        await self.pipeline.authenticate(request)
        anthropic = "anthropic-version" in request.headers
        data = [self._json(m, anthropic) for m in self.models.list()]
        if anthropic:
            return json_response({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})
        return json_response({"object": "list", "data": data})

    async def get(self, request: Request) -> Response:
        await self.pipeline.authenticate(request)
        model_id = request.path_params["model"]
        for m in self.models.list():
            if m.id == model_id:
                return json_response(self._json(m, "anthropic-version" in request.headers))
        raise model_not_found(model_id)
