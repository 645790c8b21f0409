"""The schema, as SQLAlchemy Core tables. One definition serves SQLite and Postgres;
migrations under ``migrations/versions`` create exactly these tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so later migrations can alter them on both backends.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres wants BIGINT for volume tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out. SQLite keeps no offset, so values are normalised
    to UTC before they are written and marked UTC when read back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UTCDateTime()

teams = Table(
    "teams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("max_budget", Float, nullable=True),
    Column("budget_duration", String(16), nullable=True),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", TS, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    # sha256(pepper + key) hex; the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(32), nullable=False),
    Column("name", String(200), nullable=True),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="SET NULL"), nullable=True),
    Column("models", JSON, nullable=False, default=list),
    Column("max_budget", Float, nullable=True),
    Column("budget_duration", String(16), nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("model_limits", JSON, nullable=False, default=dict),
    Column("expires_at", TS, nullable=True),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("revoked_at", TS, nullable=True),
    Column("rotated_at", TS, nullable=True),
    Column("disabled_at", TS, nullable=True),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # The server's id of the call: the idempotency key of a row written more than once
    # (a spool replayed after a crash). `request_id` is the client's x-request-id (or ours).
    Column("usage_id", String(100), nullable=False, unique=True),
    Column("request_id", String(100), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("team_id", String(64), nullable=True),
    Column("subject", String(200), nullable=True),
    Column("model", String(200), nullable=False),
    Column("provider", String(100), nullable=True),
    Column("deployment", String(200), nullable=True),
    Column("upstream_model", String(200), nullable=True),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cached_input_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=True),
    Column("status", String(32), nullable=False, default="ok"),
    Column("ts", TS, nullable=False),
    Column("agent", String(200), nullable=True),  # the agent whose call this was (its run's, or chat-as-agent)
    # The tokens were counted from the relayed deltas (no usage from the upstream: a cut stream).
    Column("estimated", Boolean, nullable=False, default=False, server_default=false()),
    # The spend queries filter by key and time; without this index they scan (LiteLLM #35766).
    Index("ix_usage_records_key_ts", "key_id", "ts"),
    Index("ix_usage_records_model_ts", "model", "ts"),
    Index("ix_usage_records_ts", "ts"),
    Index("ix_usage_records_subject_ts", "subject", "ts"),
    Index("ix_usage_records_team_ts", "team_id", "ts"),
    Index("ix_usage_records_request_id", "request_id"),
    Index("ix_usage_records_agent_ts", "agent", "ts"),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", TS, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=True),
    Column("request_id", String(100), nullable=True),
    Column("detail", JSON, nullable=False, default=dict),
    Index("ix_audit_records_ts", "ts"),
    Index("ix_audit_records_target", "target"),
)

# ---- agent runtime ---------------------------------------------------------

agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("agent", String(200), nullable=False),
    Column("owner", String(200), nullable=True),
    Column("title", String(500), nullable=True),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_agent_sessions_agent_updated", "agent", "updated_at"),
)

agent_messages = Table(
    "agent_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("session_id", String(100), ForeignKey("agent_sessions.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("role", String(32), nullable=False),
    Column("content", JSON, nullable=False),
    Column("run_id", String(100), nullable=True),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("session_id", "seq", name="uq_agent_messages_session_seq"),
)

agent_runs = Table(
    "agent_runs",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("session_id", String(100), ForeignKey("agent_sessions.id", ondelete="CASCADE"), nullable=True),
    Column("agent", String(200), nullable=False),
    # queued -> running -> succeeded | failed | cancelled
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("input", JSON, nullable=False, default=dict),
    Column("output", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", String(200), nullable=True),
    Column("lease_expires_at", TS, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_agent_runs_state_priority", "state", "priority", "created_at"),
    Index("ix_agent_runs_session", "session_id"),
)
