"""The supervisor's tables. Prefixed ``fleet_`` so a shared database stays tidy."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

nodes = Table(
    "fleet_nodes", metadata,
    Column("node_id", String(200), primary_key=True),
    Column("hostname", String(255), nullable=False, default=""),
    Column("version", String(64), nullable=False, default=""),
    Column("backends", JSON, nullable=False),
    Column("projects", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("address", String(255), nullable=True),
    Column("connected_at", Float, nullable=True),
    Column("last_seen", Float, nullable=False),
)

sessions = Table(
    "fleet_sessions", metadata,
    Column("session_id", String(200), primary_key=True),
    Column("node_id", String(200), nullable=False, index=True),
    Column("project", String(200), nullable=True, index=True),
    Column("backend", String(100), nullable=True),
    Column("model", String(200), nullable=True),
    Column("state", String(16), nullable=False),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("compactions", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("last_activity", Float, nullable=False),
)

events = Table(
    "fleet_events", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("node_id", String(200), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("envelope_id", String(64), nullable=False),
    Column("type", String(100), nullable=False),
    Column("session_id", String(200), nullable=True),
    Column("project", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("ts", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("data", JSON, nullable=False),
    UniqueConstraint("node_id", "seq", name="uq_fleet_events_node_seq"),
    Index("ix_fleet_events_ts", "ts"),
    Index("ix_fleet_events_session", "session_id"),
)

commands = Table(
    "fleet_commands", metadata,
    Column("command_id", String(64), primary_key=True),
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("type", String(32), nullable=False),
    Column("node_id", String(200), nullable=True),
    Column("target", JSON, nullable=False),
    Column("args", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("output", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("actor", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)

audit = Table(
    "fleet_audit", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(255), nullable=True),
    Column("args", JSON, nullable=False),
    Column("result", String(32), nullable=False),
    Column("error", Text, nullable=True),
    Column("source", String(255), nullable=True),
)

provider_costs = Table(
    "fleet_provider_costs", metadata,
    Column("provider", String(32), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("cost_usd", Float, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)
