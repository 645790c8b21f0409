"""`KnowledgeRoutes` mounted in a bare Starlette app, called over ASGI with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.config.knowledge import KnowledgeBaseConfig
from corral.gateway.knowledge import Access, KnowledgeRoutes
from corral.knowledge import KnowledgeService

from .conftest import write


class Denied(Exception):
    pass


async def authorize(request: Request, access: Access) -> None:
    """Callers with a key may read; only the admin key may write."""
    token = request.headers.get("authorization", "")
    if token not in ("Bearer user", "Bearer admin") or (access == "write" and token != "Bearer admin"):
        raise Denied(access)


async def denied(_: Request, exc: Exception) -> Response:
    return JSONResponse({"error": {"message": f"no {exc}", "type": "permission_error", "param": None,
                                   "code": "forbidden"}}, status_code=403)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    write(tmp_path / "src", {"a.md": "# Gateway\n\nThe gateway routes chat completions.\n",
                             "b.md": "# Fleet\n\nThe supervisor tracks nodes.\n"})
    bases = {"docs": KnowledgeBaseConfig.model_validate({"sources": ["."], "embedder": {"type": "offline"}})}
    service = KnowledgeService.from_config(bases, root=tmp_path / "src", data_dir=tmp_path / "data", router=None)
    await service.ingest("docs")
    app = Starlette(routes=KnowledgeRoutes(service, authorize).routes(), exception_handlers={Denied: denied})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corral") as http:
        yield http
    await service.aclose()


USER = {"authorization": "Bearer user"}
ADMIN = {"authorization": "Bearer admin"}


async def test_query_returns_passages_with_source_score_and_metadata(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/knowledge/docs/query", headers=USER,
                                 json={"query": "supervisor nodes", "top_k": 1})
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["source"] == "b.md" and "supervisor tracks nodes" in result["text"]
    assert result["score"] > 0 and result["metadata"]["heading"] == "Fleet"
    filtered = await client.post("/v1/knowledge/docs/query", headers=USER,
                                 json={"query": "supervisor", "filter": {"source": "a.md"}, "mode": "keyword"})
    assert filtered.json()["results"] == []


async def test_unknown_base_and_bad_bodies_are_openai_errors(client: httpx.AsyncClient) -> None:
    missing = await client.post("/v1/knowledge/nope/query", headers=USER, json={"query": "x"})
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "unknown knowledge base 'nope' (known: docs)",
                                        "type": "invalid_request_error", "param": "name",
                                        "code": "knowledge_base_not_found"}}
    bad = await client.post("/v1/knowledge/docs/query", headers=USER, json={"query": "x", "top_k": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_k"
    junk = await client.post("/v1/knowledge/docs/query", headers=USER, content=b"{not json")
    assert junk.status_code == 400 and junk.json()["error"]["code"] == "invalid_json"
    nested = await client.post("/v1/knowledge/docs/query", headers=USER,
                               json={"query": "x", "filter": {"kind": {"$gt": 1}}})
    assert nested.status_code == 400 and nested.json()["error"]["param"].startswith("filter.kind")


async def test_documents_are_added_and_removed_by_admins_only(client: httpx.AsyncClient) -> None:
    doc = {"documents": [{"source": "kb/1", "text": "Quarterly revenue grew by eleven percent.",
                          "metadata": {"team": "finance"}}]}
    forbidden = await client.post("/v1/knowledge/docs/documents", headers=USER, json=doc)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    added = await client.post("/v1/knowledge/docs/documents", headers=ADMIN, json=doc)
    assert added.status_code == 200
    assert added.json() == {"added": 1, "changed": 0, "chunks": 1, "embedded": 1, "pending": 0}
    found = await client.post("/v1/knowledge/docs/query", headers=USER,
                              json={"query": "revenue growth", "filter": {"team": "finance"}})
    assert [r["source"] for r in found.json()["results"]] == ["kb/1"]

    assert (await client.request("DELETE", "/v1/knowledge/docs/documents", headers=USER,
                                 json={"sources": ["kb/1"]})).status_code == 403
    removed = await client.request("DELETE", "/v1/knowledge/docs/documents", headers=ADMIN,
                                   json={"sources": ["kb/1", "kb/2"]})
    assert removed.json() == {"removed": 1}
    gone = await client.post("/v1/knowledge/docs/query", headers=USER,
                             json={"query": "revenue growth", "filter": {"team": "finance"}})
    assert gone.json()["results"] == []
    anonymous = await client.post("/v1/knowledge/docs/query", json={"query": "x"})
    assert anonymous.status_code == 403


async def test_list_gives_every_base_with_its_counts(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/knowledge", headers=USER)
    (base,) = response.json()["data"]
    assert (base["name"], base["documents"], base["chunks"], base["vectors"], base["search"]) == \
        ("docs", 2, 2, 2, "hybrid")
