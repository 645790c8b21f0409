"""Embedders turn texts into vectors.

`RouterEmbedder` calls a configured model through Corral's router, so the model's
deployments, fallbacks, cooldowns and keys apply, and reports the tokens it used.
`OfflineEmbedder` needs nothing: hashed word and character-trigram features, the same
vector for the same text on every machine. It is for tests and for setups without an
embedding model; it knows spelling, not meaning.
"""

from __future__ import annotations

import asyncio
import math
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np

from corral.knowledge.types import STOPWORDS
from corral.llm.errors import ProviderError
from corral.llm.router import CallContext, Router

_WORD = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


class EmbedderUnavailable(Exception):
    """The embedder failed after its retries; an ingest stops and resumes on the next run."""


class Embedder(Protocol):
    @property
    def id(self) -> str:
        """Names the embedder and its model; stored with a base's vectors."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class OfflineEmbedder:
    def __init__(self, dimensions: int = 256, *, cache_size: int = 200_000) -> None:
        self._dims = dimensions
        self._cache: dict[str, tuple[int, float]] = {}  # feature -> (index, sign)
        self._cache_size = cache_size

    @property
    def id(self) -> str:
        return f"offline-hash-v2/{self._dims}"

    @property
    def dimensions(self) -> int:
        return self._dims

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        counts: dict[str, float] = {}
        for word in _WORD.findall(text.lower()):
            if (len(word) == 1 and not word.isalnum()) or word in STOPWORDS:
                continue
            counts["w:" + word] = counts.get("w:" + word, 0.0) + 1.0
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                gram = padded[i:i + 3]
                counts[gram] = counts.get(gram, 0.0) + 0.5
        if not counts:
            return [0.0] * self._dims
        slots = [self._slot(feature) for feature in counts]
        index = np.fromiter((slot for slot, _ in slots), dtype=np.int64, count=len(slots))
        weight = np.fromiter((sign * (1.0 + math.log(c)) for (_, sign), c in zip(slots, counts.values(), strict=True)),
                             dtype=np.float64, count=len(slots))
        vector = np.bincount(index, weights=weight, minlength=self._dims)
        norm = float(np.linalg.norm(vector))
        result: list[float] = (vector / norm if norm else vector).tolist()
        return result

    def _slot(self, feature: str) -> tuple[int, float]:
        found = self._cache.get(feature)
        if found is None:
            value = zlib.crc32(feature.encode())  # stable across processes, unlike hash()
            found = (value % self._dims, 1.0 if value & 0x8000_0000 else -1.0)
            if len(self._cache) < self._cache_size:
                self._cache[feature] = found
        return found


UsageHook = Callable[[str, int, CallContext], Awaitable[None]]


class RouterEmbedder:
    """A model alias served by the router. ``on_usage(alias, tokens, ctx)`` is awaited
    after each call so the caller can record usage and cost."""

    def __init__(self, router: Router, alias: str, *, on_usage: UsageHook | None = None) -> None:
        self._router = router
        self._alias = alias
        self._on_usage = on_usage

    @property
    def id(self) -> str:
        return f"model/{self._alias}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        ctx = CallContext(alias=self._alias)
        try:
            vectors, tokens = await self._router.embed(self._alias, list(texts), ctx)
        except ProviderError as exc:
            raise EmbedderUnavailable(f"embedder {self._alias!r}: {exc}") from exc
        if self._on_usage is not None:
            await self._on_usage(self._alias, tokens, ctx)
        return vectors


async def embed_with_retries(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[list[float]]:
    """One batch, retried with exponential backoff; `EmbedderUnavailable` when all fail."""
    attempt = 0
    while True:
        try:
            vectors = await embedder.embed(texts)
        except EmbedderUnavailable:
            if attempt >= retries:
                raise
        else:
            if len(vectors) != len(texts):
                raise EmbedderUnavailable(f"{embedder.id} returned {len(vectors)} vectors for {len(texts)} texts")
            return vectors
        await sleep(backoff * (2 ** attempt))
        attempt += 1
