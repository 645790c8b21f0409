"""Persistence: one SQL implementation (SQLite and Postgres), migrations, batch writer."""

from corral.store.batch import BatchStats, BatchWriter
from corral.store.keys import KeyRecord, TeamRecord
from corral.store.runtime import MessageRecord, RunRecord, SessionRecord
from corral.store.store import Store
from corral.store.usage import AuditRecord, SpendRow, UsageRecord

__all__ = [
    "AuditRecord",
    "BatchStats",
    "BatchWriter",
    "KeyRecord",
    "MessageRecord",
    "RunRecord",
    "SessionRecord",
    "SpendRow",
    "Store",
    "TeamRecord",
    "UsageRecord",
]
