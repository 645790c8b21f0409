"""Chroma, over HTTP to a Chroma server (`chroma run`). Corral always sends its own
vectors: the collection has no embedding function, so Chroma never loads a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from corral.knowledge.stores.base import mismatch
from corral.knowledge.types import Filter, Metadata

_DIMENSIONS_KEY = "corral_dimensions"


class ChromaStore:
    def __init__(self, collection: str, url: str, *, api_key: str | None = None) -> None:
        self._collection_name = collection
        self._url = url
        self._headers = {"x-chroma-token": api_key} if api_key else None
        self._client: Any = None
        self._collection: Any = None

    @property
    def description(self) -> str:
        return f"chroma collection {self._collection_name!r} at {self._url}"

    async def _api(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            parts = urlsplit(self._url)
            self._client = await chromadb.AsyncHttpClient(
                host=parts.hostname or "127.0.0.1", port=parts.port or (443 if parts.scheme == "https" else 8000),
                ssl=parts.scheme == "https", headers=self._headers,
                settings=Settings(anonymized_telemetry=False),
            )
        return self._client

    async def _existing(self) -> Any:
        if self._collection is None:
            api = await self._api()
            names = {getattr(c, "name", c) for c in await api.list_collections()}
            if self._collection_name in names:
                self._collection = await api.get_collection(self._collection_name, embedding_function=None)
        return self._collection

    async def stored_dimensions(self) -> int | None:
        collection = await self._existing()
        if collection is None:
            return None
        value = (collection.metadata or {}).get(_DIMENSIONS_KEY)
        return int(value) if value is not None else None

    async def open(self, dimensions: int) -> None:
        have = await self.stored_dimensions()
        if await self._existing() is None:
            api = await self._api()
            self._collection = await api.create_collection(
                self._collection_name, embedding_function=None,
                metadata={_DIMENSIONS_KEY: dimensions, "hnsw:space": "cosine"},
            )
        elif have is not None and have != dimensions:
            raise mismatch(self.description, have, dimensions)

    async def upsert(self, ids: Sequence[int], vectors: Sequence[Sequence[float]],
                     metadata: Sequence[Metadata]) -> None:
        collection = await self._existing()
        await collection.upsert(ids=[str(i) for i in ids], embeddings=[list(v) for v in vectors],
                                metadatas=[dict(m) for m in metadata])

    async def delete(self, ids: Sequence[int]) -> None:
        collection = await self._existing()
        if collection is not None and ids:
            await collection.delete(ids=[str(i) for i in ids])

    async def search(self, vector: Sequence[float], top_k: int, flt: Filter) -> list[tuple[int, float]]:
        collection = await self._existing()
        if collection is None:
            return []
        result = await collection.query(query_embeddings=[list(vector)], n_results=top_k, where=_where(flt),
                                        include=["distances"])
        ids, distances = result["ids"][0], (result.get("distances") or [[]])[0]
        return [(int(i), 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    async def count(self) -> int:
        collection = await self._existing()
        return int(await collection.count()) if collection is not None else 0

    async def drop(self) -> None:
        if await self._existing() is not None:
            await (await self._api()).delete_collection(self._collection_name)
        self._collection = None

    async def aclose(self) -> None:
        self._client = self._collection = None


def _where(flt: Filter) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = [
        {key: {"$in": wanted} if isinstance(wanted, list) else {"$eq": wanted}} for key, wanted in flt.items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
