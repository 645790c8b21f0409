"""Qdrant: a server by URL in production, its embedded local mode (a directory) otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from corral.knowledge.stores.base import mismatch
from corral.knowledge.types import Filter, Metadata


class QdrantStore:
    def __init__(self, collection: str, *, url: str | None = None, path: str | None = None,
                 api_key: str | None = None) -> None:
        self._collection = collection
        self._where = url or path or ""
        self._client = AsyncQdrantClient(url=url, api_key=api_key) if url else AsyncQdrantClient(path=path)

    @property
    def description(self) -> str:
        return f"qdrant collection {self._collection!r} at {self._where}"

    async def stored_dimensions(self) -> int | None:
        if not await self._client.collection_exists(self._collection):
            return None
        info = await self._client.get_collection(self._collection)
        vectors: Any = info.config.params.vectors
        size = getattr(vectors, "size", None)
        return int(size) if size is not None else None

    async def open(self, dimensions: int) -> None:
        have = await self.stored_dimensions()
        if have is None:
            await self._client.create_collection(
                self._collection, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE))
        elif have != dimensions:
            raise mismatch(self.description, have, dimensions)

    async def upsert(self, ids: Sequence[int], vectors: Sequence[Sequence[float]],
                     metadata: Sequence[Metadata]) -> None:
        points = [models.PointStruct(id=i, vector=list(v), payload=dict(m))
                  for i, v, m in zip(ids, vectors, metadata, strict=True)]
        await self._client.upsert(self._collection, points=points, wait=True)

    async def delete(self, ids: Sequence[int]) -> None:
        if ids and await self._client.collection_exists(self._collection):
            await self._client.delete(self._collection, points_selector=models.PointIdsList(points=list(ids)),
                                      wait=True)

    async def search(self, vector: Sequence[float], top_k: int, flt: Filter) -> list[tuple[int, float]]:
        conditions: list[Any] = []
        for key, wanted in flt.items():
            match: Any = (models.MatchAny(any=list(wanted)) if isinstance(wanted, list)
                          else models.MatchValue(value=wanted))
            conditions.append(models.FieldCondition(key=key, match=match))
        response = await self._client.query_points(
            self._collection, query=list(vector), limit=top_k, with_payload=False,
            query_filter=models.Filter(must=conditions) if conditions else None,
        )
        return [(int(p.id), float(p.score)) for p in response.points]

    async def count(self) -> int:
        if not await self._client.collection_exists(self._collection):
            return 0
        return int((await self._client.count(self._collection, exact=True)).count)

    async def drop(self) -> None:
        if await self._client.collection_exists(self._collection):
            await self._client.delete_collection(self._collection)

    async def aclose(self) -> None:
        await self._client.close()
