"""The one interface every vector store implements.

A store keeps vectors by the catalog's chunk id, with the chunk's metadata so that
filters run inside the store. Texts and the keyword index stay in the catalog.
Vectors are unit length; scores are cosine similarities (higher is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from corral.knowledge.types import Filter, KnowledgeError, Metadata


class DimensionMismatch(KnowledgeError):
    pass


class VectorStore(Protocol):
    @property
    def description(self) -> str:
        """Says which store and where, e.g. "qdrant collection 'corral_docs' at http://...". """
        ...

    async def open(self, dimensions: int) -> None:
        """Create the collection if missing; `DimensionMismatch` if it holds other vectors."""
        ...

    async def stored_dimensions(self) -> int | None: ...

    async def upsert(self, ids: Sequence[int], vectors: Sequence[Sequence[float]],
                     metadata: Sequence[Metadata]) -> None: ...

    async def delete(self, ids: Sequence[int]) -> None: ...

    async def search(self, vector: Sequence[float], top_k: int, flt: Filter) -> list[tuple[int, float]]: ...

    async def count(self) -> int: ...

    async def drop(self) -> None: ...

    async def aclose(self) -> None: ...


def mismatch(description: str, have: int, want: int) -> DimensionMismatch:
    return DimensionMismatch(f"{description} holds {have}-dimensional vectors, but the embedder gives {want}")
