"""Helpers for the knowledge tests: a base over a temporary folder, and an embedder that
can be switched off to play an outage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corral.config.knowledge import KnowledgeBaseConfig
from corral.knowledge import EmbedderUnavailable, KnowledgeBase, OfflineEmbedder, VectorStore
from corral.knowledge.catalog import Catalog
from corral.knowledge.stores import EmbeddedStore


class FlakyEmbedder:
    """The offline embedder, failing every call once ``calls_left`` reaches zero."""

    def __init__(self, dimensions: int = 64, *, calls_left: int | None = None) -> None:
        self.inner = OfflineEmbedder(dimensions)
        self.calls_left = calls_left
        self.calls = 0
        self.texts = 0

    @property
    def id(self) -> str:
        return self.inner.id

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls_left is not None:
            if self.calls_left <= 0:
                raise EmbedderUnavailable("embedder down (test)")
            self.calls_left -= 1
        self.texts += len(texts)
        return await self.inner.embed(texts)


async def no_sleep(_: float) -> None:
    return None


def make_base(root: Path, data: Path, *, embedder: Any = None, store: VectorStore | None = None,
              name: str = "kb", **config: Any) -> KnowledgeBase:
    settings = {"sources": ["."], **config}
    if embedder is not None:
        settings.setdefault("embedder", {"type": "offline", "batch_size": 4, "retries": 1, "backoff": 0})
    base_config = KnowledgeBaseConfig.model_validate(settings)
    if embedder is not None and store is None:
        store = EmbeddedStore(data / "vectors.db")
    return KnowledgeBase(name, base_config, root=root, catalog=Catalog(data / "catalog.db"), store=store,
                         embedder=embedder, sleep=no_sleep)


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
