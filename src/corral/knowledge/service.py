"""`KnowledgeService`: every configured base, built from the config in one place, and
the typed operations the CLI, the REST routes and the agent tool call."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from corral.config.knowledge import KnowledgeBaseConfig
from corral.knowledge.base import BaseStats, IngestReport, KnowledgeBase, Mode, NewDocument, Progress
from corral.knowledge.catalog import Catalog
from corral.knowledge.embedders import Embedder, OfflineEmbedder, RouterEmbedder, UsageHook
from corral.knowledge.search import ModelReranker
from corral.knowledge.stores import build_store
from corral.knowledge.types import Filter, Hit, KnowledgeError, UnknownBase
from corral.llm.router import Router

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class KnowledgeService:
    def __init__(self, bases: Mapping[str, KnowledgeBase]) -> None:
        self._bases = dict(bases)

    @classmethod
    def from_config(
        cls,
        bases: Mapping[str, KnowledgeBaseConfig],
        *,
        root: Path,
        data_dir: Path,
        router: Router | None,
        on_usage: UsageHook | None = None,
    ) -> KnowledgeService:
        """``root``: where relative sources are read from (the config file's folder);
        ``router``: serves model embedders and rerankers (None: only offline ones)."""
        built: dict[str, KnowledgeBase] = {}
        for name, config in bases.items():
            directory = data_dir / "knowledge" / _SAFE_NAME.sub("_", name)
            embedder: Embedder | None = None
            if config.embedder is not None:
                if config.embedder.type == "offline":
                    embedder = OfflineEmbedder(config.embedder.dimensions or 256)
                else:
                    assert config.embedder.model
                    if router is None:
                        raise KnowledgeError(f"knowledge.{name}.embedder: model {config.embedder.model!r} "
                                             "needs the router")
                    embedder = RouterEmbedder(router, config.embedder.model, on_usage=on_usage)
            reranker = None
            if config.search.rerank and router is not None:
                reranker = ModelReranker(router, config.search.rerank)
            store = build_store(name, config.store, directory) if embedder is not None else None
            built[name] = KnowledgeBase(name, config, root=root, catalog=Catalog(directory / "catalog.db"),
                                        store=store, embedder=embedder, reranker=reranker)
        return cls(built)

    def names(self) -> list[str]:
        return sorted(self._bases)

    def base(self, name: str) -> KnowledgeBase:
        found = self._bases.get(name)
        if found is None:
            raise UnknownBase(name, list(self._bases))
        return found

    def notes(self) -> list[str]:
        """What to say at startup: bases that answer from keyword search alone."""
        return [f"knowledge base {name!r}: no embedder configured, keyword search only"
                for name, base in sorted(self._bases.items()) if base.embedder is None]

    async def query(self, name: str, text: str, *, top_k: int | None = None, flt: Filter | None = None,
                    mode: Mode | None = None) -> list[Hit]:
        return await self.base(name).query(text, top_k=top_k, flt=flt, mode=mode)

    async def ingest(self, name: str, progress: Progress | None = None) -> IngestReport:
        return await self.base(name).ingest(progress)

    async def add(self, name: str, documents: Sequence[NewDocument]) -> IngestReport:
        return await self.base(name).add(documents)

    async def remove(self, name: str, sources: Sequence[str]) -> int:
        return await self.base(name).remove(sources)

    async def stats(self) -> list[BaseStats]:
        return [await self._bases[name].stats() for name in self.names()]

    async def drop(self, name: str) -> None:
        await self.base(name).drop()

    async def aclose(self) -> None:
        for base in self._bases.values():
            await base.aclose()
