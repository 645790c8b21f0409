"""One knowledge base: its catalog, its vector store and its embedder, and the two
things done with them: ingest and search."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from corral.config.knowledge import KnowledgeBaseConfig
from corral.knowledge.catalog import Catalog
from corral.knowledge.chunkers import chunk
from corral.knowledge.embedders import Embedder, EmbedderUnavailable, embed_with_retries
from corral.knowledge.loaders import discover, kind_of, load, relative_source
from corral.knowledge.search import ModelReranker, reciprocal_rank_fusion
from corral.knowledge.stores.base import DimensionMismatch, VectorStore
from corral.knowledge.types import Document, Filter, Hit, KnowledgeError, Metadata, Skipped, check_filter

log = logging.getLogger("corral.knowledge")

Mode = Literal["hybrid", "keyword", "vector"]
_WRITE_BATCH = 200  # documents per catalog transaction during an ingest


class Progress(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


class _NoProgress:
    def stage(self, name: str, total: int) -> None:
        return None

    def advance(self, count: int) -> None:
        return None


@dataclass(slots=True)
class IngestReport:
    files: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_written: int = 0
    chunks_embedded: int = 0
    pending: int = 0  # chunks still waiting for vectors (the embedder stopped); the next run resumes
    skipped: list[Skipped] = field(default_factory=list)
    stopped: str | None = None  # why embedding stopped early
    seconds: float = 0.0
    embed_seconds: float = 0.0  # time spent in the embedder itself

    def to_dict(self) -> dict[str, object]:
        return {"files": self.files, "added": self.added, "changed": self.changed, "unchanged": self.unchanged,
                "removed": self.removed, "chunks_written": self.chunks_written,
                "chunks_embedded": self.chunks_embedded, "pending": self.pending,
                "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
                "stopped": self.stopped, "seconds": round(self.seconds, 3),
                "embed_seconds": round(self.embed_seconds, 3)}


@dataclass(slots=True)
class BaseStats:
    name: str
    documents: int
    chunks: int
    pending: int
    vectors: int | None  # None: keyword only
    search: str
    embedder: str | None
    store: str | None
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "documents": self.documents, "chunks": self.chunks, "pending": self.pending,
                "vectors": self.vectors, "search": self.search, "embedder": self.embedder, "store": self.store,
                "bytes": self.bytes}


@dataclass(slots=True)
class NewDocument:
    """A document sent through the API rather than read from a source file."""

    source: str
    text: str
    metadata: Metadata = field(default_factory=dict)


class KnowledgeBase:
    def __init__(
        self,
        name: str,
        config: KnowledgeBaseConfig,
        *,
        root: Path,
        catalog: Catalog,
        store: VectorStore | None,
        embedder: Embedder | None,
        reranker: ModelReranker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (store is None) != (embedder is None):
            raise ValueError("a vector store and an embedder go together")
        self.name = name
        self.config = config
        self.root = root
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self._sleep = sleep
        self._ready = False
        self._write_lock = asyncio.Lock()

    @property
    def default_mode(self) -> Mode:
        return self.config.search.mode if self.embedder is not None else "keyword"

    # ---- vectors ----------------------------------------------------------

    async def _ensure(self, dimensions: int) -> None:
        """Check once that the store and the catalog hold vectors of this embedder."""
        if self._ready or self.store is None or self.embedder is None:
            return
        built_with = self.catalog.get_meta("embedder")
        if built_with is not None and built_with != self.embedder.id:
            raise DimensionMismatch(
                f"knowledge.{self.name}.embedder: the base was built with embedder {built_with!r}, the config "
                f"now names {self.embedder.id!r}; run `corral knowledge drop {self.name}` and ingest again")
        try:
            await self.store.open(dimensions)
        except DimensionMismatch as exc:
            raise DimensionMismatch(
                f"knowledge.{self.name}: {exc} ({self.embedder.id}); point the store at another collection "
                f"or run `corral knowledge drop {self.name}` and ingest again") from None
        if built_with is None:
            self.catalog.set_meta("embedder", self.embedder.id)
        self._ready = True

    # ---- ingest -------------------------------------------------------------

    async def ingest(self, progress: Progress | None = None) -> IngestReport:
        """Read the sources: new and changed files are chunked again, deleted ones removed,
        then every chunk still without a vector is embedded (this is also the resume)."""
        progress = progress or _NoProgress()
        report = IngestReport()
        started = time.perf_counter()
        async with self._write_lock:
            if self.embedder is not None and self.catalog.get_meta("embedder") is None:
                # Chunks written while the base had no embedder have no vectors yet.
                self.catalog.mark_all_pending()
            paths = await asyncio.to_thread(discover, self.config.sources, self.root, self.config.exclude)
            report.files = len(paths)
            known = self.catalog.digests("file")
            seen: set[str] = set()
            progress.stage("reading", len(paths))
            root = self.root.resolve()
            batch: list[Document] = []
            for path in paths:
                source = relative_source(path, root)
                seen.add(source)
                loaded = await asyncio.to_thread(load, path, source, max_bytes=self.config.max_file_bytes)
                if isinstance(loaded, Skipped):
                    report.skipped.append(loaded)
                elif known.get(source) == loaded.digest:
                    report.unchanged += 1
                else:
                    batch.append(loaded)
                    if source in known:
                        report.changed += 1
                    else:
                        report.added += 1
                    if len(batch) >= _WRITE_BATCH:
                        report.chunks_written += await self._write(batch, origin="file")
                        batch = []
                progress.advance(1)
            report.chunks_written += await self._write(batch, origin="file")
            for source in sorted(set(known) - seen):
                await self._remove(source)
                report.removed += 1
            await self._embed_pending(report, progress)
        report.seconds = time.perf_counter() - started
        return report

    async def _write(self, documents: Sequence[Document], *, origin: str) -> int:
        """Chunk the documents and replace what the catalog had for them; the chunks written."""
        if not documents:
            return 0
        chunked = [(d.source, d.digest, d.kind, chunk(d, self.config.chunking)) for d in documents]
        old = self.catalog.chunk_ids_of([d.source for d in documents])
        if old and self.store is not None:
            await self.store.delete(old)
        await asyncio.to_thread(self.catalog.replace, chunked, origin=origin, embedded=self.embedder is None)
        return sum(len(c[3]) for c in chunked)

    async def _remove(self, source: str) -> bool:
        old = self.catalog.chunk_ids(source)
        if old and self.store is not None:
            await self.store.delete(old)
        existed = self.catalog.has(source)
        self.catalog.remove(source)
        return existed

    async def _embed_pending(self, report: IngestReport, progress: Progress) -> None:
        if self.store is None or self.embedder is None:
            return
        embedder, settings = self.embedder, self.config.embedder
        assert settings is not None
        progress.stage("embedding", self.catalog.pending_count())
        while batch := self.catalog.pending(settings.batch_size):
            began = time.perf_counter()
            try:
                vectors = await embed_with_retries(embedder, [c.text for c in batch], retries=settings.retries,
                                                   backoff=settings.backoff, sleep=self._sleep)
            except EmbedderUnavailable as exc:
                report.stopped = str(exc)
                log.warning("knowledge %s: embedding stopped (%s); run the ingest again to resume", self.name, exc)
                break
            finally:
                report.embed_seconds += time.perf_counter() - began
            await self._ensure(len(vectors[0]))
            ids = [c.id for c in batch]
            await self.store.upsert(ids, vectors, [c.metadata for c in batch])
            self.catalog.mark_embedded(ids)
            report.chunks_embedded += len(batch)
            progress.advance(len(batch))
        report.pending = self.catalog.pending_count()

    # ---- documents through the API -------------------------------------------

    async def add(self, documents: Sequence[NewDocument]) -> IngestReport:
        report = IngestReport(files=len(documents))
        started = time.perf_counter()
        async with self._write_lock:
            latest = {d.source: d for d in documents}  # the same source twice: the last one wins
            known = self.catalog.existing(list(latest))
            prepared = []
            for new in latest.values():
                kind = kind_of(Path(new.source)) or "text"
                if kind in ("pdf", "html"):
                    kind = "text"  # the API sends text, never the raw file
                digest = hashlib.sha256(new.text.encode()).hexdigest()
                prepared.append(Document(new.source, new.text, kind, digest, dict(new.metadata)))
                if new.source in known:
                    report.changed += 1
                else:
                    report.added += 1
            report.chunks_written += await self._write(prepared, origin="api")
            await self._embed_pending(report, _NoProgress())
        report.seconds = time.perf_counter() - started
        return report

    async def remove(self, sources: Sequence[str]) -> int:
        async with self._write_lock:
            return sum([await self._remove(source) for source in sources])

    # ---- search -----------------------------------------------------------------

    async def query(self, text: str, *, top_k: int | None = None, flt: Filter | None = None,
                    mode: Mode | None = None) -> list[Hit]:
        flt = check_filter(flt)
        top_k = top_k or self.config.search.top_k
        mode = mode or self.default_mode
        if mode != "keyword" and self.embedder is None:
            raise KnowledgeError(f"knowledge base {self.name!r} has no embedder: only keyword search")
        wide = max(top_k * 4, 20) if mode == "hybrid" or self.reranker is not None else top_k
        hits: list[Hit]
        if mode == "keyword":
            hits = await asyncio.to_thread(self.catalog.keyword, text, wide, flt)
        elif mode == "vector":
            hits = await self._vector(text, wide, flt)
        else:
            keyword = await asyncio.to_thread(self.catalog.keyword, text, wide, flt)
            try:
                vector = await self._vector(text, wide, flt)
            except EmbedderUnavailable as exc:
                log.warning("knowledge %s: %s; answering from keyword search alone", self.name, exc)
                vector = []
            hits = reciprocal_rank_fusion(keyword, vector)
        threshold = self.config.search.score_threshold
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        if self.reranker is not None:
            hits = await self.reranker.rerank(text, hits)
        return hits[:top_k]

    async def _vector(self, text: str, limit: int, flt: Filter) -> list[Hit]:
        assert self.embedder is not None and self.store is not None
        if not text.strip():
            return []
        vector = (await self.embedder.embed([text]))[0]
        await self._ensure(len(vector))
        pairs = await self.store.search(vector, limit, flt)
        found = self.catalog.hits([i for i, _ in pairs])  # by primary key: faster than a thread hop
        hits = []
        for chunk_id, score in pairs:
            hit = found.get(chunk_id)
            if hit is not None:  # a vector whose chunk was removed meanwhile
                hit.score = score
                hits.append(hit)
        return hits

    # ---- housekeeping -------------------------------------------------------------

    async def stats(self) -> BaseStats:
        catalog = await asyncio.to_thread(self.catalog.stats)
        vectors = await self.store.count() if self.store is not None else None
        return BaseStats(self.name, catalog.documents, catalog.chunks, catalog.pending, vectors, self.default_mode,
                         self.embedder.id if self.embedder else None,
                         self.store.description if self.store else None, catalog.bytes)

    async def drop(self) -> None:
        async with self._write_lock:
            if self.store is not None:
                await self.store.drop()
            self.catalog.drop()
            self._ready = False

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()
        self.catalog.close()
