"""The embedded store: vectors in a SQLite file in the data directory, searched by
exact (brute-force) cosine similarity with numpy.

Measured against the alternatives in docs/knowledge.md: a 100k x 256 matrix product is
a few milliseconds, exact (no index to tune or rebuild), and needs no SQLite extension
loading (which many Python builds lack). The matrix is loaded on the first search and
reloaded after a write.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from corral.knowledge.stores.base import mismatch
from corral.knowledge.types import Filter, Metadata


@dataclass(slots=True)
class _Matrix:
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    # Filters: per metadata key, each value's rows (built from SQL on first use of the key).
    postings: dict[str, dict[object, npt.NDArray[np.int64]]] = field(default_factory=dict)


class EmbeddedStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL, "
                         "metadata TEXT NOT NULL)")
        self._lock = threading.Lock()
        self._matrix: _Matrix | None = None

    @property
    def description(self) -> str:
        return f"embedded store {str(self._path)!r}"

    async def stored_dimensions(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dimensions'").fetchone()
        return int(row[0]) if row else None

    async def open(self, dimensions: int) -> None:
        have = await self.stored_dimensions()
        if have is None:
            with self._lock:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('dimensions', ?)", (str(dimensions),))
        elif have != dimensions:
            raise mismatch(self.description, have, dimensions)

    async def upsert(self, ids: Sequence[int], vectors: Sequence[Sequence[float]],
                     metadata: Sequence[Metadata]) -> None:
        rows = [(i, np.asarray(v, dtype=np.float32).tobytes(), json.dumps(m, ensure_ascii=False))
                for i, v, m in zip(ids, vectors, metadata, strict=True)]
        await asyncio.to_thread(self._write, "INSERT OR REPLACE INTO vectors (id, vector, metadata) VALUES (?, ?, ?)",
                                rows)

    async def delete(self, ids: Sequence[int]) -> None:
        await asyncio.to_thread(self._write, "DELETE FROM vectors WHERE id = ?", [(i,) for i in ids])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._matrix = None

    async def search(self, vector: Sequence[float], top_k: int, flt: Filter) -> list[tuple[int, float]]:
        matrix = self._matrix if self._matrix is not None else await asyncio.to_thread(self._load)
        if not len(matrix.ids):
            return []
        scores = matrix.vectors @ np.asarray(vector, dtype=np.float32)
        if flt:
            scores = np.where(await asyncio.to_thread(self._allowed, matrix, flt), scores, -np.inf)
        k = min(top_k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best])]
        return [(int(matrix.ids[i]), float(scores[i])) for i in best if np.isfinite(scores[i])]

    def _allowed(self, matrix: _Matrix, flt: Filter) -> npt.NDArray[np.bool_]:
        allowed = np.ones(len(matrix.ids), dtype=np.bool_)
        for key, wanted in flt.items():
            postings = matrix.postings.get(key)
            if postings is None:
                postings = matrix.postings[key] = self._postings(matrix, key)
            rows = np.zeros(len(matrix.ids), dtype=np.bool_)
            for value in wanted if isinstance(wanted, list) else [wanted]:
                found = postings.get(_key(value))
                if found is not None:
                    rows[found] = True
            allowed &= rows
        return allowed

    def _postings(self, matrix: _Matrix, key: str) -> dict[object, npt.NDArray[np.int64]]:
        with self._lock:
            rows = self._db.execute("SELECT id, json_extract(metadata, ?) FROM vectors WHERE "
                                    "json_extract(metadata, ?) IS NOT NULL", ('$."' + key + '"',) * 2).fetchall()
        positions = {int(i): n for n, i in enumerate(matrix.ids.tolist())}
        grouped: dict[object, list[int]] = {}
        for chunk_id, value in rows:
            position = positions.get(int(chunk_id))
            if position is not None:
                grouped.setdefault(_key(value), []).append(position)
        return {value: np.asarray(found, dtype=np.int64) for value, found in grouped.items()}

    def _load(self) -> _Matrix:
        with self._lock:
            if self._matrix is not None:
                return self._matrix
            rows = self._db.execute("SELECT id, vector FROM vectors ORDER BY id").fetchall()
            dims_row = self._db.execute("SELECT value FROM meta WHERE key = 'dimensions'").fetchone()
            dims = int(dims_row[0]) if dims_row else 0
            vectors = np.empty((len(rows), dims), dtype=np.float32)
            for index, (_, blob) in enumerate(rows):
                vectors[index] = np.frombuffer(blob, dtype=np.float32)
            self._matrix = _Matrix(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), vectors)
            return self._matrix

    async def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    async def drop(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM vectors")
            self._db.execute("DELETE FROM meta")
            self._matrix = None

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


def _key(value: object) -> object:
    """One spelling per value as SQLite's json_extract returns it (booleans as 0/1)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
