"""Chroma, over its HTTP API (v2) to a Chroma server (`chroma run`).

Spoken directly with httpx rather than through the `chromadb` package: Corral always
sends its own vectors (so Chroma never loads a model), owns its connection's lifetime,
and needs none of that package's dependencies at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from corral.knowledge.stores.base import mismatch
from corral.knowledge.types import Filter, KnowledgeError, Metadata

_DIMENSIONS_KEY = "corral_dimensions"


class ChromaStore:
    def __init__(self, collection: str, url: str, *, api_key: str | None = None,
                 tenant: str = "default_tenant", database: str = "default_database",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._name = collection
        self._url = url.rstrip("/")
        headers = {"x-chroma-token": api_key} if api_key else {}
        self._http = httpx.AsyncClient(base_url=f"{self._url}/api/v2/tenants/{tenant}/databases/{database}",
                                       headers=headers, timeout=30.0, transport=transport)
        self._id: str | None = None
        self._metadata: dict[str, Any] = {}

    @property
    def description(self) -> str:
        return f"chroma collection {self._name!r} at {self._url}"

    async def _call(self, method: str, path: str, body: object = None, *, missing_ok: bool = False) -> Any:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise KnowledgeError(f"{self.description}: {exc}") from None
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise KnowledgeError(f"{self.description}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    async def _collection(self) -> str | None:
        if self._id is None:
            found = await self._call("GET", f"/collections/{self._name}", missing_ok=True)
            if found is not None:
                self._id, self._metadata = str(found["id"]), dict(found.get("metadata") or {})
        return self._id

    async def stored_dimensions(self) -> int | None:
        if await self._collection() is None:
            return None
        value = self._metadata.get(_DIMENSIONS_KEY)
        return int(value) if value is not None else None

    async def open(self, dimensions: int) -> None:
        have = await self.stored_dimensions()
        if self._id is None:
            created = await self._call("POST", "/collections", {
                "name": self._name, "get_or_create": True, "metadata": {_DIMENSIONS_KEY: dimensions},
                "configuration": {"hnsw": {"space": "cosine"}},
            })
            self._id, self._metadata = str(created["id"]), dict(created.get("metadata") or {})
            have = self._metadata.get(_DIMENSIONS_KEY)
        if have is not None and int(have) != dimensions:
            raise mismatch(self.description, int(have), dimensions)

    async def upsert(self, ids: Sequence[int], vectors: Sequence[Sequence[float]],
                     metadata: Sequence[Metadata]) -> None:
        collection = await self._required()
        await self._call("POST", f"/collections/{collection}/upsert", {
            "ids": [str(i) for i in ids], "embeddings": [list(v) for v in vectors],
            "metadatas": [dict(m) for m in metadata],
        })

    async def delete(self, ids: Sequence[int]) -> None:
        collection = await self._collection()
        if collection is not None and ids:
            await self._call("POST", f"/collections/{collection}/delete", {"ids": [str(i) for i in ids]})

    async def search(self, vector: Sequence[float], top_k: int, flt: Filter) -> list[tuple[int, float]]:
        collection = await self._collection()
        if collection is None:
            return []
        body: dict[str, Any] = {"query_embeddings": [list(vector)], "n_results": top_k, "include": ["distances"]}
        where = _where(flt)
        if where is not None:
            body["where"] = where
        result = await self._call("POST", f"/collections/{collection}/query", body)
        ids, distances = result["ids"][0], (result.get("distances") or [[]])[0]
        return [(int(i), 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    async def count(self) -> int:
        collection = await self._collection()
        return int(await self._call("GET", f"/collections/{collection}/count")) if collection else 0

    async def drop(self) -> None:
        await self._call("DELETE", f"/collections/{self._name}", missing_ok=True)
        self._id, self._metadata = None, {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _required(self) -> str:
        collection = await self._collection()
        if collection is None:
            raise KnowledgeError(f"{self.description} does not exist yet")
        return collection


def _where(flt: Filter) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = [
        {key: {"$in": wanted} if isinstance(wanted, list) else {"$eq": wanted}} for key, wanted in flt.items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
