"""fleet: initial schema

Revision ID: 0001_fleet
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_fleet"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "fleet_nodes",
        sa.Column("node_id", sa.String(200), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("backends", sa.JSON, nullable=False),
        sa.Column("projects", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("connected_at", sa.Float, nullable=True),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "fleet_sessions",
        sa.Column("session_id", sa.String(200), primary_key=True),
        sa.Column("node_id", sa.String(200), nullable=False, index=True),
        sa.Column("project", sa.String(200), nullable=True, index=True),
        sa.Column("backend", sa.String(100), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("compactions", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_activity", sa.Float, nullable=False),
    )
    op.create_table(
        "fleet_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("envelope_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("project", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.UniqueConstraint("node_id", "seq", name="uq_fleet_events_node_seq"),
    )
    op.create_index("ix_fleet_events_ts", "fleet_events", ["ts"])
    op.create_index("ix_fleet_events_session", "fleet_events", ["session_id"])
    op.create_table(
        "fleet_commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("node_id", sa.String(200), nullable=True),
        sa.Column("target", sa.JSON, nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_table(
        "fleet_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False, index=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("source", sa.String(255), nullable=True),
    )
    op.create_table(
        "fleet_provider_costs",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("fleet_provider_costs", "fleet_audit", "fleet_commands", "fleet_events",
                  "fleet_sessions", "fleet_nodes"):
        op.drop_table(table)
