"""`/v1/knowledge`: search a knowledge base, add and remove its documents.

    POST   /v1/knowledge/{name}/query      {"query", "top_k"?, "filter"?, "mode"?} -> {"results": [...]}
    POST   /v1/knowledge/{name}/documents  {"documents": [{"source", "text", "metadata"?}]}   (write)
    DELETE /v1/knowledge/{name}/documents  {"sources": [...]}                                   (write)
    GET    /v1/knowledge                   every base's stats

Who may call is decided by the ``authorize(request, access)`` callable the app gives:
it returns to allow and raises (the app renders its own auth errors) to deny; writes
are asked for with access "write" (admin-scoped), searches with "read". Errors of this
surface are OpenAI error objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.knowledge.base import NewDocument
from corral.knowledge.service import KnowledgeService
from corral.knowledge.types import KnowledgeError, MetaValue, UnknownBase

Access = Literal["read", "write"]
Authorize = Callable[[Request, Access], Awaitable[None]]
MAX_DOCUMENTS = 1000  # per request
M = TypeVar("M", bound=BaseModel)


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    top_k: int | None = Field(default=None, ge=1, le=100)
    filter: dict[str, MetaValue | list[MetaValue]] | None = None
    mode: Literal["hybrid", "keyword", "vector"] | None = None


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=1000)
    text: str = Field(min_length=1)
    metadata: dict[str, MetaValue] = Field(default_factory=dict)


class DocumentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class RemoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class KnowledgeRoutes:
    def __init__(self, service: KnowledgeService, authorize: Authorize) -> None:
        self._service = service
        self._authorize = authorize

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/knowledge", self.list_bases, methods=["GET"]),
            Route("/v1/knowledge/{name}/query", self.query, methods=["POST"]),
            Route("/v1/knowledge/{name}/documents", self.add_documents, methods=["POST"]),
            Route("/v1/knowledge/{name}/documents", self.remove_documents, methods=["DELETE"]),
        ]

    async def list_bases(self, request: Request) -> Response:
        await self._authorize(request, "read")
        return _json({"object": "list", "data": [s.to_dict() for s in await self._service.stats()]})

    async def query(self, request: Request) -> Response:
        await self._authorize(request, "read")
        name = request.path_params["name"]
        body = await _parse(request, QueryIn)
        if isinstance(body, Response):
            return body
        try:
            hits = await self._service.query(name, body.query, top_k=body.top_k,
                                             flt=dict(body.filter) if body.filter else None, mode=body.mode)
        except KnowledgeError as exc:
            return _known_error(exc)
        return _json({"object": "list", "results": [h.to_dict() for h in hits]})

    async def add_documents(self, request: Request) -> Response:
        await self._authorize(request, "write")
        name = request.path_params["name"]
        body = await _parse(request, DocumentsIn)
        if isinstance(body, Response):
            return body
        documents = [NewDocument(d.source, d.text, dict(d.metadata)) for d in body.documents]
        try:
            report = await self._service.add(name, documents)
        except KnowledgeError as exc:
            return _known_error(exc)
        status = 200 if report.stopped is None else 503
        data: dict[str, Any] = {"added": report.added, "changed": report.changed, "chunks": report.chunks_written,
                                "embedded": report.chunks_embedded, "pending": report.pending}
        if report.stopped:
            data["error"] = {"message": f"stored for keyword search; vectors pending: {report.stopped}",
                             "type": "server_error", "param": None, "code": "embedder_unavailable"}
        return _json(data, status)

    async def remove_documents(self, request: Request) -> Response:
        await self._authorize(request, "write")
        name = request.path_params["name"]
        body = await _parse(request, RemoveIn)
        if isinstance(body, Response):
            return body
        try:
            removed = await self._service.remove(name, body.sources)
        except KnowledgeError as exc:
            return _known_error(exc)
        return _json({"removed": removed})


async def _parse(request: Request, model: type[M]) -> M | Response:
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "The request body must be valid JSON", code="invalid_json")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        return _error(400, f"{param or 'body'}: {first['msg']}", param=param, code="invalid_value")


def _known_error(exc: KnowledgeError) -> Response:
    if isinstance(exc, UnknownBase):
        return _error(404, str(exc), param="name", code="knowledge_base_not_found")
    return _error(400, str(exc), code="invalid_value")


def _error(status: int, message: str, *, code: str, param: str | None = None) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")
