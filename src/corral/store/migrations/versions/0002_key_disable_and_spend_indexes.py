"""keys can be disabled; spend of a JWT subject or a team is found by index

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        # Budgets of JWT subjects and teams are seeded from these on the first call of a period.
        batch_op.create_index("ix_usage_records_subject_ts", ["subject", "ts"], unique=False)
        batch_op.create_index("ix_usage_records_team_ts", ["team_id", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_team_ts")
        batch_op.drop_index("ix_usage_records_subject_ts")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
