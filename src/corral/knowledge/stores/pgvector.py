"""pgvector on Postgres: one table per base, cosine distance, metadata as jsonb."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from corral.knowledge.stores.base import mismatch
from corral.knowledge.types import Filter, KnowledgeError, Metadata


class PgvectorStore:
    def __init__(self, table: str, url: str) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", table):
            raise KnowledgeError(f"pgvector table name {table!r} must be letters, digits and '_'")
        self._table = table
        self._url = url
        self._pool: Any = None

    @property
    def description(self) -> str:
        host = self._url.split("@")[-1]  # never the password
        return f"pgvector table {self._table!r} at {host}"

    async def _db(self) -> Any:
        if self._pool is None:
            import asyncpg

            self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4)
        return self._pool

    async def stored_dimensions(self) -> int | None:
        pool = await self._db()
        typmod = await pool.fetchval(
            "SELECT a.atttypmod FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname = $1 AND a.attname = 'embedding' AND c.relkind = 'r'", self._table)
        return int(typmod) if typmod is not None and typmod > 0 else None

    async def open(self, dimensions: int) -> None:
        import asyncpg

        pool = await self._db()
        try:
            await pool.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except asyncpg.PostgresError as exc:
            raise KnowledgeError(f"{self.description}: the pgvector extension is not available ({exc})") from None
        have = await self.stored_dimensions()
        if have is None:
            await pool.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (id bigint PRIMARY KEY, "
                f"embedding vector({dimensions}) NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}')")
        elif have != dimensions:
            raise mismatch(self.description, have, dimensions)

    async def upsert(self, ids: Sequence[int], vectors: Sequence[Sequence[float]],
                     metadata: Sequence[Metadata]) -> None:
        pool = await self._db()
        rows = [(i, _literal(v), json.dumps(m)) for i, v, m in zip(ids, vectors, metadata, strict=True)]
        await pool.executemany(
            f"INSERT INTO {self._table} (id, embedding, metadata) VALUES ($1, $2::vector, $3::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET embedding = excluded.embedding, metadata = excluded.metadata", rows)

    async def delete(self, ids: Sequence[int]) -> None:
        if ids and await self.stored_dimensions() is not None:
            await (await self._db()).execute(f"DELETE FROM {self._table} WHERE id = ANY($1::bigint[])", list(ids))

    async def search(self, vector: Sequence[float], top_k: int, flt: Filter) -> list[tuple[int, float]]:
        clauses, params = [], [_literal(vector), top_k]
        for key, wanted in flt.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            params.extend([key, [json.dumps(v) for v in values]])
            clauses.append(f"metadata -> ${len(params) - 1} = ANY(${len(params)}::jsonb[])")
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = await (await self._db()).fetch(
            f"SELECT id, 1 - (embedding <=> $1::vector) AS score FROM {self._table}{where} "
            "ORDER BY embedding <=> $1::vector LIMIT $2", *params)
        return [(int(r["id"]), float(r["score"])) for r in rows]

    async def count(self) -> int:
        if await self.stored_dimensions() is None:
            return 0
        return int(await (await self._db()).fetchval(f"SELECT count(*) FROM {self._table}"))

    async def drop(self) -> None:
        await (await self._db()).execute(f"DROP TABLE IF EXISTS {self._table}")

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"
