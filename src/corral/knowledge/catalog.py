"""A base's catalog: one SQLite file with its documents (source + content hash), its
chunks (text, metadata, whether embedded yet) and a BM25 keyword index (FTS5).

The catalog is what makes ingestion incremental and resumable: a document whose hash is
unchanged is skipped, and chunks not yet embedded (`embedded = 0`) are picked up again
by the next run after a crash or an embedder outage.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.knowledge.types import STOPWORDS, Chunk, Filter, Hit, Metadata

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY, digest TEXT NOT NULL, kind TEXT NOT NULL, chunks INTEGER NOT NULL,
    origin TEXT NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL, embedded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (source);
CREATE INDEX IF NOT EXISTS chunks_pending ON chunks (id) WHERE embedded = 0;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    text, content = 'chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""
_TERM = re.compile(r"\w+", re.UNICODE)


@dataclass(slots=True)
class PendingChunk:
    id: int
    text: str
    metadata: Metadata


@dataclass(slots=True)
class CatalogStats:
    documents: int
    chunks: int
    pending: int
    bytes: int


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- meta -------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # ---- documents --------------------------------------------------------

    def digests(self, origin: str) -> dict[str, str]:
        """source -> content hash of the documents that came from ``origin`` ("file" or "api")."""
        with self._lock:
            rows = self._db.execute("SELECT source, digest FROM documents WHERE origin = ?", (origin,))
            return {str(s): str(d) for s, d in rows}

    def has(self, source: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM documents WHERE source = ?", (source,)).fetchone() is not None

    def chunk_ids(self, source: str) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT id FROM chunks WHERE source = ?", (source,))]

    def existing(self, sources: Sequence[str]) -> set[str]:
        if not sources:
            return set()
        marks = ",".join("?" * len(sources))
        with self._lock:
            rows = self._db.execute(f"SELECT source FROM documents WHERE source IN ({marks})", list(sources))
            return {str(r[0]) for r in rows}

    def chunk_ids_of(self, sources: Sequence[str]) -> list[int]:
        if not sources:
            return []
        marks = ",".join("?" * len(sources))
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM chunks WHERE source IN ({marks})", list(sources))
            return [int(r[0]) for r in rows]

    def replace(self, documents: Sequence[tuple[str, str, str, Sequence[Chunk]]], *, origin: str,
                embedded: bool) -> None:
        """Each (source, digest, kind, chunks) document's chunks, replacing any it had; one transaction."""
        now = time.time()
        with self._tx() as db:
            db.executemany("DELETE FROM chunks WHERE source = ?", [(d[0],) for d in documents])
            db.executemany(
                "INSERT INTO chunks (source, text, metadata, embedded) VALUES (?, ?, ?, ?)",
                [(source, c.text, json.dumps(c.metadata, ensure_ascii=False), int(embedded))
                 for source, _, _, chunks in documents for c in chunks],
            )
            db.executemany(
                "INSERT INTO documents (source, digest, kind, chunks, origin, updated) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET digest = excluded.digest, kind = excluded.kind, "
                "chunks = excluded.chunks, origin = excluded.origin, updated = excluded.updated",
                [(source, digest, kind, len(chunks), origin, now) for source, digest, kind, chunks in documents],
            )

    def remove(self, source: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM chunks WHERE source = ?", (source,))
            db.execute("DELETE FROM documents WHERE source = ?", (source,))

    # ---- embedding progress -----------------------------------------------

    def pending(self, limit: int) -> list[PendingChunk]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, text, metadata FROM chunks WHERE embedded = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [PendingChunk(int(i), str(t), json.loads(m)) for i, t, m in rows]

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM chunks WHERE embedded = 0").fetchone()[0])

    def mark_embedded(self, ids: Sequence[int]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE chunks SET embedded = 1 WHERE id = ?", [(i,) for i in ids])

    def mark_all_pending(self) -> None:
        with self._tx() as db:
            db.execute("UPDATE chunks SET embedded = 0")

    def drop(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM chunks")
            db.execute("DELETE FROM documents")
            db.execute("DELETE FROM meta")

    # ---- reading ------------------------------------------------------------

    def keyword(self, query: str, limit: int, flt: Filter) -> list[Hit]:
        """BM25 (FTS5) over every chunk; the score is -bm25, so higher is better."""
        words = [t.lower() for t in _TERM.findall(query)]
        terms = list(dict.fromkeys(w for w in words if w not in STOPWORDS)) or list(dict.fromkeys(words))
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        where, params = _filter_sql(flt)
        if where:
            sql = ("SELECT c.id, c.source, c.text, c.metadata, chunks_fts.rank FROM chunks_fts "
                   "JOIN chunks c ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ?" + where +
                   " ORDER BY chunks_fts.rank LIMIT ?")
        else:
            # Rank inside the index first, then read only the winners' rows.
            sql = ("SELECT c.id, c.source, c.text, c.metadata, top.rank FROM (SELECT rowid, rank FROM chunks_fts "
                   "WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?) AS top JOIN chunks c ON c.id = top.rowid "
                   "ORDER BY top.rank")
            params = [limit]
        args = (match, *params) if not where else (match, *params, limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Hit(int(i), str(t), str(s), -float(r), json.loads(m)) for i, s, t, m, r in rows]

    def hits(self, ids: Sequence[int]) -> dict[int, Hit]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(f"SELECT id, source, text, metadata FROM chunks WHERE id IN ({marks})",
                                    list(ids)).fetchall()
        return {int(i): Hit(int(i), str(t), str(s), 0.0, json.loads(m)) for i, s, t, m in rows}

    def stats(self) -> CatalogStats:
        with self._lock:
            docs = int(self._db.execute("SELECT count(*) FROM documents").fetchone()[0])
            chunks, pending = self._db.execute(
                "SELECT count(*), coalesce(sum(embedded = 0), 0) FROM chunks").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return CatalogStats(docs, int(chunks), int(pending), size)


def _filter_sql(flt: Filter) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    for key, wanted in flt.items():
        path = '$."' + key + '"'
        if isinstance(wanted, list):
            clauses.append(f"json_extract(c.metadata, ?) IN ({','.join('?' * len(wanted))})")
            params.extend([path, *wanted])
        else:
            clauses.append("json_extract(c.metadata, ?) = ?")
            params.extend([path, wanted])
    return "".join(" AND " + c for c in clauses), params
