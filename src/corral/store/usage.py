"""Usage (spend) and audit records: written in batches, exactly once per usage id (the
server's id of a call; the client's request id is kept with the row, not trusted as a key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Literal

from sqlalchemy import Date, Integer, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from corral.ids import new_id
from corral.store.models import audit_records, usage_records
from corral.store.sql import insert_values

GroupBy = Literal["key", "model", "day", "subject", "team", "agent"]
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DATETIME on SQLite


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)  # not frozen: one is built per model call, and a frozen __init__ costs 2x
class UsageRecord:
    request_id: str
    model: str
    key_id: str | None = None
    team_id: str | None = None
    subject: str | None = None
    provider: str | None = None
    deployment: str | None = None
    upstream_model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    status: str = "ok"
    agent: str | None = None
    estimated: bool = False  # tokens counted from the relayed deltas (a cut stream with no usage)
    usage_id: str = field(default_factory=new_id)  # the server's idempotency key of the row
    ts: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str
    action: str
    target: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    ts: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class SpendRow:
    group: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


# `ts` last: on SQLite the insert stores it as text (see insert_many)
_FIELDS = (*(name for name in UsageRecord.__dataclass_fields__ if name != "ts"), "ts")
_values = attrgetter(*_FIELDS[:-1])  # one C call per record instead of a getattr per field
_ROWS_PER_STATEMENT = 500  # x 19 parameters: under SQLite's and asyncpg's parameter limits


def _sqlite_ts(ts: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text, in UTC."""
    if ts.tzinfo is UTC:  # every record made here: isoformat is cheaper than strftime
        return ts.isoformat(" ", "microseconds")[:26]
    return ts.astimezone(UTC).strftime(_SQLITE_TS)


class UsageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._paramstyle = engine.dialect.paramstyle

    async def insert_many(self, records: Sequence[UsageRecord]) -> int:
        """Insert-or-ignore on usage id; returns how many rows were new (the statement's
        row count: conflicting rows are not counted).

        The statement is written out rather than built by SQLAlchemy: its per-parameter
        processing of a batch cost the gateway more CPU than the database storing it
        (the batch writer runs in the serving process). Same SQL on SQLite and Postgres."""
        if not records:
            return 0
        new = 0
        sqlite = self._sqlite
        async with self._engine.begin() as conn:
            for start in range(0, len(records), _ROWS_PER_STATEMENT):
                chunk = records[start:start + _ROWS_PER_STATEMENT]
                params: list[Any] = []
                extend, append = params.extend, params.append
                for record in chunk:
                    extend(_values(record))
                    append(_sqlite_ts(record.ts) if sqlite else record.ts)
                sql = insert_values(usage_records.name, _FIELDS, len(chunk), self._paramstyle,
                                    "ON CONFLICT (usage_id) DO NOTHING")
                result = await conn.exec_driver_sql(sql, tuple(params))
                new += result.rowcount
        return new

    async def get(self, request_id: str) -> UsageRecord | None:
        query = select(usage_records).where(usage_records.c.request_id == request_id).order_by(usage_records.c.id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return UsageRecord(**{name: row[name] for name in UsageRecord.__dataclass_fields__})

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar_one())

    async def total_cost(
        self,
        key_id: str | None = None,
        *,
        team_id: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
    ) -> float:
        """Spend of one key, of a team (all its keys and JWT callers) or of a JWT subject
        (its calls made without a key) since a time."""
        if sum(v is not None for v in (key_id, team_id, subject)) != 1:
            raise ValueError("give exactly one of key_id, team_id and subject")
        total = func.coalesce(func.sum(usage_records.c.cost_usd), 0.0)
        if key_id is not None:
            query = select(total).where(usage_records.c.key_id == key_id)
        elif team_id is not None:
            query = select(total).where(usage_records.c.team_id == team_id)
        else:
            query = select(total).where(usage_records.c.subject == subject, usage_records.c.key_id.is_(None))
        if since is not None:
            query = query.where(usage_records.c.ts >= since)
        async with self._engine.connect() as conn:
            return float((await conn.execute(query)).scalar_one())

    async def spend(
        self,
        group_by: GroupBy,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key_id: str | None = None,
    ) -> list[SpendRow]:
        async with self._engine.connect() as conn:
            group = self._group_column(group_by, conn.dialect.name).label("grp")
            query = (
                select(
                    group,
                    func.count().label("requests"),
                    func.coalesce(func.sum(usage_records.c.input_tokens), 0).label("input_tokens"),
                    func.coalesce(func.sum(usage_records.c.output_tokens), 0).label("output_tokens"),
                    func.coalesce(func.sum(usage_records.c.cost_usd), 0.0).label("cost_usd"),
                )
                .group_by(group)
                .order_by(group)
            )
            if since is not None:
                query = query.where(usage_records.c.ts >= since)
            if until is not None:
                query = query.where(usage_records.c.ts < until)
            if key_id is not None:
                query = query.where(usage_records.c.key_id == key_id)
            rows = (await conn.execute(query)).mappings().all()
        return [
            SpendRow(
                group=None if row["grp"] is None else str(row["grp"]),
                requests=int(row["requests"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cost_usd=float(row["cost_usd"]),
            )
            for row in rows
        ]

    @staticmethod
    def _group_column(group_by: GroupBy, dialect: str) -> ColumnElement[Any]:
        if group_by == "key":
            return usage_records.c.key_id
        if group_by == "model":
            return usage_records.c.model
        if group_by == "subject":
            return usage_records.c.subject
        if group_by == "team":
            return usage_records.c.team_id
        if group_by == "agent":
            return usage_records.c.agent
        if dialect == "postgresql":
            # Days are UTC days whatever the server's TimeZone setting.
            return cast(func.timezone("UTC", usage_records.c.ts), Date)
        return func.date(usage_records.c.ts)


class AuditRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_many(self, records: Sequence[AuditRecord]) -> int:
        if not records:
            return 0
        async with self._engine.begin() as conn:
            await conn.execute(audit_records.insert(), [asdict(record) for record in records])
        return len(records)

    async def list(self, *, target: str | None = None, limit: int = 100) -> list[AuditRecord]:
        query = select(audit_records).order_by(audit_records.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(audit_records.c.target == target)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [AuditRecord(**{name: row[name] for name in AuditRecord.__dataclass_fields__}) for row in rows]


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """One time bucket of model calls (the console's charts)."""

    start: datetime
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    cost_usd: float


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The linear-interpolated percentile (Postgres' ``percentile_cont``) of sorted values."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class UsageSeries:
    """Time-bucketed usage: requests, errors, p50/p99 latency and spend per bucket since a
    time, optionally of one key. Postgres computes the percentiles; SQLite (small,
    single-node deployments) returns each bucket's latencies and Python does."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _bucket(self, dialect: str, since: datetime, seconds: int) -> ColumnElement[Any]:
        epoch = since.timestamp()
        if dialect == "postgresql":
            return func.floor((func.extract("epoch", usage_records.c.ts) - epoch) / seconds)
        return cast((func.strftime("%s", usage_records.c.ts) - int(epoch)) / seconds, Integer)

    async def buckets(self, since: datetime, bucket_seconds: int, *, key_id: str | None = None,
                      until: datetime | None = None) -> list[UsageBucket]:
        """Every bucket from ``since`` to ``until`` (default now), empty ones included."""
        until = until or _now()
        count = max(1, int((until - since).total_seconds() // bucket_seconds) + 1)
        async with self._engine.connect() as conn:
            dialect = conn.dialect.name
            bucket = self._bucket(dialect, since, bucket_seconds).label("bucket")
            where = [usage_records.c.ts >= since, usage_records.c.ts < until]
            if key_id is not None:
                where.append(usage_records.c.key_id == key_id)
            columns: list[Any] = [
                bucket, func.count().label("requests"),
                func.sum(case((usage_records.c.status != "ok", 1), else_=0)).label("errors"),
                func.coalesce(func.sum(usage_records.c.cost_usd), 0.0).label("cost_usd"),
            ]
            if dialect == "postgresql":
                columns += [
                    func.percentile_cont(0.5).within_group(usage_records.c.latency_ms).label("p50"),
                    func.percentile_cont(0.99).within_group(usage_records.c.latency_ms).label("p99"),
                ]
            rows = (await conn.execute(select(*columns).where(*where).group_by(bucket))).mappings().all()
            latencies: dict[int, list[float]] = {}
            if dialect != "postgresql":
                query = (select(bucket, usage_records.c.latency_ms)
                         .where(*where, usage_records.c.latency_ms.is_not(None)))
                for index, latency in (await conn.execute(query)).all():
                    latencies.setdefault(int(index), []).append(float(latency))
        found = {int(row["bucket"]): row for row in rows}
        result = []
        for index in range(count):
            row = found.get(index)
            if row is None:
                p50 = p99 = None
            elif dialect == "postgresql":
                p50 = None if row["p50"] is None else float(row["p50"])
                p99 = None if row["p99"] is None else float(row["p99"])
            else:
                values = sorted(latencies.get(index, ()))
                p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
            result.append(UsageBucket(
                start=since + timedelta(seconds=index * bucket_seconds),
                requests=int(row["requests"]) if row else 0, errors=int(row["errors"] or 0) if row else 0,
                p50_ms=p50, p99_ms=p99, cost_usd=float(row["cost_usd"]) if row else 0.0))
        return result
