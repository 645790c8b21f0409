"""The supervisor's SQL store (its own tables and Alembic environment)."""

from corral.fleet.store.repo import EventRow, FleetStore

__all__ = ["EventRow", "FleetStore"]
