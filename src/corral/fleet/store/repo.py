"""FleetStore: async repository over the fleet tables, one SQL for SQLite and Postgres."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corral.fleet.store import tables as t
from corral.fleet.store.migrate import upgrade
from corral.store.sql import insert_values

# the columns of fleet_events a stored event fills (`id` is the database's), in parameter order
_EVENT_COLUMNS = ("node_id", "seq", "envelope_id", "type", "session_id", "project", "model", "input_tokens",
                  "output_tokens", "cost_usd", "ts", "received_at", "data")
# 13 parameters an event: 1,000 events stay under SQLite's and Postgres' 32,766 parameters a statement
_EVENTS_PER_STATEMENT = 1000


@dataclass(slots=True)
class EventRow:
    node_id: str
    seq: int
    envelope_id: str
    type: str
    session_id: str | None
    project: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    ts: float
    data: dict[str, Any]


class FleetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._paramstyle = engine.dialect.paramstyle
        upsert = self._insert(t.sessions)
        # one statement for any number of rows (executemany): a batch touching 500 sessions
        # costs one round trip into the driver, not 500 statements built and compiled
        self._session_upsert = upsert.on_conflict_do_update(
            index_elements=["session_id"],
            set_={c.name: upsert.excluded[c.name] for c in t.sessions.c if c.name != "session_id"})

    async def migrate(self) -> None:
        await upgrade(self.engine)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self.engine.dispose()

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table))

    # ---- events ----------------------------------------------------------------

    async def insert_events(
        self, rows: Sequence[EventRow],
        sessions_for: Callable[[set[tuple[str, int]]], list[dict[str, Any]]] | None = None,
    ) -> set[tuple[str, int]]:
        """Insert-or-ignore on (node_id, seq) and return the keys that were new.

        ``sessions_for(new_keys)`` gives session rows to upsert in the same transaction,
        so session totals never count an event twice or miss one across a crash.
        """
        if not rows:
            return set()
        now = time.time()
        new: set[tuple[str, int]] = set()
        async with self.engine.begin() as conn:
            for start in range(0, len(rows), _EVENTS_PER_STATEMENT):
                chunk = rows[start:start + _EVENTS_PER_STATEMENT]
                params: list[Any] = []
                for r in chunk:
                    params += (r.node_id, r.seq, r.envelope_id, r.type, r.session_id, r.project, r.model,
                               r.input_tokens, r.output_tokens, r.cost_usd, r.ts, now, orjson.dumps(r.data).decode())
                sql = insert_values(t.events.name, _EVENT_COLUMNS, len(chunk), self._paramstyle,
                                    "ON CONFLICT (node_id, seq) DO NOTHING RETURNING node_id, seq")
                result = await conn.exec_driver_sql(sql, tuple(params))
                stored: Sequence[Any] = result.fetchall()
                new.update((str(node), int(seq)) for node, seq in stored)
            if sessions_for is not None:
                await self._upsert_sessions(conn, sessions_for(new))
            return new

    async def list_events(
        self, *, session_id: str | None = None, node_id: str | None = None, type_prefix: str | None = None,
        after_id: int = 0, limit: int = 100,
    ) -> list[dict[str, Any]]:
        q = select(t.events).where(t.events.c.id > after_id).order_by(t.events.c.id).limit(limit)
        if session_id:
            q = q.where(t.events.c.session_id == session_id)
        if node_id:
            q = q.where(t.events.c.node_id == node_id)
        if type_prefix:
            q = q.where(t.events.c.type.startswith(type_prefix))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    async def max_seq(self, node_id: str) -> int:
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(func.max(t.events.c.seq)).where(t.events.c.node_id == node_id))
            return int(value or 0)

    async def cost_report(self, since: float) -> dict[str, Any]:
        e = t.events
        out: dict[str, Any] = {"since": since}
        async with self.engine.connect() as conn:
            total = (await conn.execute(
                select(func.coalesce(func.sum(e.c.cost_usd), 0.0), func.coalesce(func.sum(e.c.input_tokens), 0),
                       func.coalesce(func.sum(e.c.output_tokens), 0)).where(e.c.ts >= since)
            )).one()
            out.update(total_cost_usd=float(total[0]), input_tokens=int(total[1]), output_tokens=int(total[2]))
            for key, column in (("by_session", e.c.session_id), ("by_node", e.c.node_id),
                                ("by_project", e.c.project), ("by_model", e.c.model)):
                rows = await conn.execute(
                    select(column, func.sum(e.c.cost_usd), func.sum(e.c.input_tokens + e.c.output_tokens))
                    .where(e.c.ts >= since, e.c.type == "usage").group_by(column)
                )
                out[key] = {str(r[0]): {"cost_usd": float(r[1] or 0), "tokens": int(r[2] or 0)} for r in rows}
            provider = await conn.execute(
                select(t.provider_costs.c.provider, func.sum(t.provider_costs.c.cost_usd))
                .where(t.provider_costs.c.day >= time.strftime("%Y-%m-%d", time.gmtime(since)))
                .group_by(t.provider_costs.c.provider)
            )
            out["provider_reported"] = {str(r[0]): float(r[1] or 0) for r in provider}
        return out

    async def upsert_provider_cost(self, provider: str, model: str, day: str, cost: float, tokens: int) -> None:
        stmt = self._insert(t.provider_costs).values(
            provider=provider, model=model, day=day, cost_usd=cost, tokens=tokens, updated_at=time.time())
        stmt = stmt.on_conflict_do_update(
            index_elements=["provider", "model", "day"],
            set_={"cost_usd": cost, "tokens": tokens, "updated_at": time.time()})
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    # ---- nodes and sessions -------------------------------------------------------

    async def upsert_node(self, node: dict[str, Any]) -> None:
        await self.upsert_nodes([node])

    async def upsert_nodes(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        async with self.engine.begin() as conn:
            for node in rows:
                stmt = self._insert(t.nodes).values(**node)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["node_id"], set_={k: v for k, v in node.items() if k != "node_id"})
                await conn.execute(stmt)

    async def set_node_status(self, node_id: str, status: str, last_seen: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(t.nodes).where(t.nodes.c.node_id == node_id)
                               .values(status=status, last_seen=last_seen))

    async def load_nodes(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(select(t.nodes))]

    async def upsert_sessions(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        async with self.engine.begin() as conn:
            await self._upsert_sessions(conn, rows)

    async def _upsert_sessions(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Every row carries every column (``SessionState.row()``)."""
        if rows:
            await conn.execute(self._session_upsert, list(rows))

    async def load_sessions(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(select(t.sessions))]

    async def get_sessions(self, session_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not session_ids:
            return []
        async with self.engine.connect() as conn:
            q = select(t.sessions).where(t.sessions.c.session_id.in_(session_ids))
            return [dict(r._mapping) for r in await conn.execute(q)]

    async def list_sessions(self, *, node_id: str | None = None, project: str | None = None,
                            state: str | None = None, limit: int = 1000) -> tuple[list[dict[str, Any]], int]:
        """Sessions matching every filter given, oldest first, and how many match in all."""
        where = [c == v for c, v in ((t.sessions.c.node_id, node_id), (t.sessions.c.project, project),
                                     (t.sessions.c.state, state)) if v]
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(t.sessions).where(*where).order_by(t.sessions.c.created_at).limit(limit))
            total = await conn.scalar(select(func.count()).select_from(t.sessions).where(*where))
            return [dict(r._mapping) for r in rows], int(total or 0)

    # ---- commands -----------------------------------------------------------------

    async def insert_command(self, row: dict[str, Any]) -> bool:
        """False when the idempotency key is already taken."""
        stmt = self._insert(t.commands).values(**row).on_conflict_do_nothing()
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt.returning(t.commands.c.command_id))
            return result.first() is not None

    async def finish_command(self, command_id: str, status: str, output: dict[str, Any] | None,
                             error: str | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(t.commands).where(t.commands.c.command_id == command_id).values(
                status=status, output=output, error=error, finished_at=time.time()))

    async def get_command(self, *, command_id: str | None = None, idempotency_key: str | None = None
                          ) -> dict[str, Any] | None:
        q = select(t.commands)
        q = (q.where(t.commands.c.command_id == command_id) if command_id
             else q.where(t.commands.c.idempotency_key == idempotency_key))
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
            return dict(row._mapping) if row else None

    async def list_commands(self, limit: int = 100) -> list[dict[str, Any]]:
        q = select(t.commands).order_by(t.commands.c.created_at.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    async def purge_idempotency(self, older_than: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(t.commands).where(t.commands.c.created_at < older_than)
                               .values(idempotency_key=None))

    # ---- audit ---------------------------------------------------------------------

    async def insert_audit(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            async with self.engine.begin() as conn:
                await conn.execute(t.audit.insert(), list(rows))

    async def list_audit(self, *, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        q = select(t.audit).order_by(t.audit.c.id.desc()).limit(limit)
        if action:
            q = q.where(t.audit.c.action == action)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    async def purge_events(self, older_than: float, chunk: int = 10_000) -> int:
        """Delete events stored before ``older_than``, ``chunk`` rows per transaction so the
        event writer is never held up for long."""
        e = t.events
        removed = 0
        while True:
            oldest = select(e.c.id).where(e.c.ts < older_than).order_by(e.c.id).limit(chunk)
            async with self.engine.begin() as conn:
                count = int((await conn.execute(delete(e).where(e.c.id.in_(oldest)))).rowcount or 0)
            removed += count
            if count < chunk:
                return removed

    async def purge_audit(self, older_than: float) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t.audit).where(t.audit.c.ts < older_than))
            return int(result.rowcount or 0)
