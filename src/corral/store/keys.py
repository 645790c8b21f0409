"""API keys and teams. Only the key's hash and a short display prefix are stored."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.store.models import api_keys, teams


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    key_hash: str
    key_prefix: str
    name: str | None = None
    team_id: str | None = None
    models: tuple[str, ...] = ()
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    # {"<model alias>": {"rpm": int, "tpm": int}}: limits of this key on one model
    model_limits: dict[str, dict[str, int]] = field(default_factory=dict)
    expires_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None
    disabled_at: datetime | None = None  # disabled keys are refused until enabled again

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or _now())


@dataclass(frozen=True, slots=True)
class TeamRecord:
    id: str
    name: str
    max_budget: float | None = None
    budget_duration: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)


def new_id() -> str:
    return uuid.uuid4().hex


def _key_from_row(row: RowMapping) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        key_hash=row["key_hash"],
        key_prefix=row["key_prefix"],
        name=row["name"],
        team_id=row["team_id"],
        models=tuple(row["models"] or ()),
        max_budget=row["max_budget"],
        budget_duration=row["budget_duration"],
        rpm=row["rpm"],
        tpm=row["tpm"],
        model_limits=dict(row["model_limits"] or {}),
        expires_at=row["expires_at"],
        metadata=dict(row["metadata"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
        rotated_at=row["rotated_at"],
        disabled_at=row["disabled_at"],
    )


def _key_values(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "key_hash": record.key_hash,
        "key_prefix": record.key_prefix,
        "name": record.name,
        "team_id": record.team_id,
        "models": list(record.models),
        "max_budget": record.max_budget,
        "budget_duration": record.budget_duration,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "model_limits": record.model_limits,
        "expires_at": record.expires_at,
        "metadata": record.metadata,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "revoked_at": record.revoked_at,
        "rotated_at": record.rotated_at,
        "disabled_at": record.disabled_at,
    }


# What `KeyRepository.update` may change: never the id, the hash or the history.
UPDATABLE = frozenset({"name", "team_id", "models", "max_budget", "budget_duration", "rpm", "tpm", "model_limits",
                       "expires_at", "metadata", "disabled_at"})


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, record: KeyRecord) -> KeyRecord:
        async with self._engine.begin() as conn:
            await conn.execute(api_keys.insert().values(**_key_values(record)))
        return record

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings().first()
        return _key_from_row(row) if row else None

    async def get_by_hash(self, key_hash: str) -> KeyRecord | None:
        query = select(api_keys).where(api_keys.c.key_hash == key_hash)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _key_from_row(row) if row else None

    async def list(self, *, include_revoked: bool = False, team_id: str | None = None) -> list[KeyRecord]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        if team_id is not None:
            query = query.where(api_keys.c.team_id == team_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_key_from_row(row) for row in rows]

    async def revoke(self, key_id: str, *, at: datetime | None = None) -> KeyRecord | None:
        when = at or _now()
        query = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=when, updated_at=when)
        )
        async with self._engine.begin() as conn:
            await conn.execute(query)
        return await self.get(key_id)

    async def update(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord | None:
        """Change the settings of a live key; None when there is no live key with that id."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        values = {k: list(v) if k == "models" else v for k, v in changes.items()}
        query = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(**values, updated_at=_now())
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        if result.rowcount == 0:
            return None
        return await self.get(key_id)

    async def rotate(self, key_id: str, *, key_hash: str, key_prefix: str) -> KeyRecord | None:
        """Give a live key a new secret; the id (and so its spend history) is kept."""
        when = _now()
        query = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(key_hash=key_hash, key_prefix=key_prefix, rotated_at=when, updated_at=when)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        if result.rowcount == 0:
            return None
        return await self.get(key_id)


class TeamRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, record: TeamRecord) -> TeamRecord:
        values = {
            "id": record.id,
            "name": record.name,
            "max_budget": record.max_budget,
            "budget_duration": record.budget_duration,
            "metadata": record.metadata,
            "created_at": record.created_at,
        }
        async with self._engine.begin() as conn:
            await conn.execute(teams.insert().values(**values))
        return record

    async def get(self, team_id: str) -> TeamRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(teams).where(teams.c.id == team_id))).mappings().first()
        return _team_from_row(row) if row else None

    async def list(self) -> list[TeamRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(teams).order_by(teams.c.name))).mappings().all()
        return [_team_from_row(row) for row in rows]


def _team_from_row(row: RowMapping) -> TeamRecord:
    return TeamRecord(
        id=row["id"],
        name=row["name"],
        max_budget=row["max_budget"],
        budget_duration=row["budget_duration"],
        metadata=dict(row["metadata"] or {}),
        created_at=row["created_at"],
    )
