"""`Store`: the repositories over one engine, opened with the schema brought up to date."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from corral.store import migrate
from corral.store.engine import make_engine
from corral.store.keys import KeyRepository, TeamRepository
from corral.store.runtime import RunRepository, SessionRepository
from corral.store.usage import AuditRecord, AuditRepository, UsageRecord, UsageRepository, UsageSeries

BatchRecord = UsageRecord | AuditRecord


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.keys = KeyRepository(engine)
        self.teams = TeamRepository(engine)
        self.usage = UsageRepository(engine)
        self.usage_series = UsageSeries(engine)  # the console's charts
        self.audit = AuditRepository(engine)
        self.sessions = SessionRepository(engine)
        self.runs = RunRepository(engine)

    @classmethod
    def connect(
        cls, url: str | None = None, *, pool_size: int = 10, echo: bool = False, pooler: str | None = None
    ) -> Store:
        """The store on ``url`` (default: SQLite in the data dir); nothing is opened until
        the first statement, so an app factory can build it and `migrate` it at startup.
        ``pooler`` is ``database.pooler`` (docs/store.md#pgbouncer)."""
        return cls(make_engine(url, pool_size=pool_size, echo=echo, pooler=pooler))

    @classmethod
    async def open(
        cls, url: str | None = None, *, pool_size: int = 10, echo: bool = False, upgrade: bool = True,
        pooler: str | None = None,
    ) -> Store:
        """Connect to ``url`` and apply pending migrations; ``pooler`` is ``database.pooler``
        (a ``?pooler=`` in the URL says the same)."""
        store = cls.connect(url, pool_size=pool_size, echo=echo, pooler=pooler)
        try:
            if upgrade:
                await store.migrate()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def migrate(self) -> None:
        """Bring the schema up to date (Alembic's head)."""
        await migrate.upgrade(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def write_batch(self, records: Sequence[BatchRecord]) -> None:
        """The batch writer's sink: one insert per record kind."""
        usage = [r for r in records if isinstance(r, UsageRecord)]
        audit = [r for r in records if isinstance(r, AuditRecord)]
        if usage:
            await self.usage.insert_many(usage)
        if audit:
            await self.audit.insert_many(audit)

    async def aclose(self) -> None:
        await self.engine.dispose()
