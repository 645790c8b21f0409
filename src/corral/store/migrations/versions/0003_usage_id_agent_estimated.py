"""usage rows: the server's usage id is the idempotency key, the client's request id
is kept as metadata; the agent of a call; tokens estimated from a cut stream

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage_id", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("agent", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Rows written before 0003 were unique per request id: it stays their usage id.
    op.execute("UPDATE usage_records SET usage_id = request_id")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.alter_column("usage_id", existing_type=sa.String(length=100), nullable=False)
        batch_op.drop_constraint("uq_usage_records_request_id", type_="unique")
        batch_op.create_unique_constraint("uq_usage_records_usage_id", ["usage_id"])
        batch_op.create_index("ix_usage_records_request_id", ["request_id"], unique=False)
        batch_op.create_index("ix_usage_records_agent_ts", ["agent", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_agent_ts")
        batch_op.drop_index("ix_usage_records_request_id")
        batch_op.drop_constraint("uq_usage_records_usage_id", type_="unique")
        batch_op.create_unique_constraint("uq_usage_records_request_id", ["request_id"])
        batch_op.drop_column("estimated")
        batch_op.drop_column("agent")
        batch_op.drop_column("usage_id")
