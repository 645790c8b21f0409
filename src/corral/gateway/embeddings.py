"""OpenAI-compatible `POST /v1/embeddings`, served by the router's `embed`."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from corral.gateway.errors import ApiError
from corral.gateway.http import json_body, json_response
from corral.gateway.openai_format import validation_error
from corral.gateway.pipeline import CallPipeline, model_not_found
from corral.llm.router import Router
from corral.llm.types import Usage

MAX_INPUTS = 2048  # OpenAI's own limit per request


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def validate_embeddings(payload: Any) -> tuple[EmbeddingsIn, list[str]]:
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object", code="invalid_json")
    try:
        body = EmbeddingsIn.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(400, "'input' must not be empty", param="input", code="invalid_value")
    if not all(isinstance(t, str) for t in texts):
        # Token ids only mean something to one tokenizer; this gateway may route anywhere.
        raise ApiError(400, "'input' as token ids is not supported; send strings", param="input",
                       code="invalid_value")
    if body.dimensions is not None:
        # Truncating another model's vectors would silently change their meaning.
        raise ApiError(400, "'dimensions' is not supported yet; configure a model with the size you need",
                       param="dimensions", code="unsupported_parameter")
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"'input' has {len(texts)} items; the limit is {MAX_INPUTS}", param="input",
                       code="invalid_value")
    return body, [str(t) for t in texts]


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


class EmbeddingsApi:
    def __init__(self, pipeline: CallPipeline, router: Router) -> None:
        self.pipeline = pipeline
        self.router = router

    async def create(self, request: Request) -> Response:
        started = time.perf_counter()
        body, texts = validate_embeddings(await json_body(request))
        if not self.router.has_model(body.model):
            await self.pipeline.authenticate(request)  # without a key, nothing is learnt about which models exist
            raise model_not_found(body.model)
        call = self.pipeline.begin(request, body.model, "embeddings", started=started)
        await self.pipeline.admit(request, call)
        vectors, tokens = await self.pipeline.settle(call, self.router.embed(body.model, texts, call.ctx),
                                                     _tokens_usage)
        data = [{"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        return json_response({"object": "list", "data": data, "model": body.model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _tokens_usage(result: tuple[list[list[float]], int]) -> Usage:
    return Usage(input_tokens=result[1])
