"""OpenAI-compatible `POST /v1/embeddings`, served by the router's `embed`."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.gateway.errors import ApiError
from corral.gateway.openai import json_response, model_not_found
from corral.gateway.openai_format import json_body, validation_error
from corral.gateway.state import CallRecord, Gateway
from corral.llm.errors import ProviderError
from corral.llm.router import CallContext
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


def routes(gateway: Gateway) -> list[BaseRoute]:
    async def embeddings(request: Request) -> Response:
        started = time.perf_counter()
        body, texts = validate_embeddings(await json_body(request))
        if not gateway.router.has_model(body.model):
            raise model_not_found(body.model)
        await gateway.admit(request, body.model, "embeddings")
        ctx = CallContext(request_id=request.state.request_id)
        record = CallRecord(request.state.request_id, "embeddings", body.model, False, ctx, started)
        try:
            vectors, tokens = await gateway.router.embed(body.model, texts, ctx)
        except ProviderError as exc:
            record.status, record.error = exc.status, exc
            await gateway.finish(request, record)
            raise ApiError.from_provider(exc) from None
        finally:
            request.state.upstream_seconds = ctx.upstream_seconds
        record.usage = Usage(input_tokens=tokens)
        await gateway.finish(request, record)
        data = [{"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        return json_response({"object": "list", "data": data, "model": body.model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return [Route("/v1/embeddings", embeddings, methods=["POST"])]
