"""Alembic environment. Corral runs migrations programmatically (see
`corral.store.migrate`), always handing over an open connection."""

from __future__ import annotations

from alembic import context

from corral.store.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("corral migrations run through corral.store.migrate (corral db upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
