"""Alembic environment for the fleet's own tables (version table corral_fleet_alembic_version).

Run through `corral.fleet.store.migrate.upgrade`, which hands in a live connection.
"""

from __future__ import annotations

from alembic import context

from corral.fleet.store.tables import metadata

VERSION_TABLE = "corral_fleet_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
