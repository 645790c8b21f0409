from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from corral.store import Store, migrate
from corral.store.engine import make_engine
from corral.store.models import metadata


async def test_open_applies_migrations_to_head_creating_every_table(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        assert await migrate.current(store.engine) == migrate.head_revision() == "0003"
        async with store.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert set(metadata.tables) <= tables
        assert "alembic_version" in tables
    finally:
        await store.aclose()


async def test_upgrade_is_idempotent_and_safe_for_replicas_starting_together(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate.upgrade(engine) for engine in engines))
        assert results == ["0003", "0003", "0003"]
        assert await migrate.upgrade(engines[0]) == "0003"
    finally:
        for engine in engines:
            await engine.dispose()


async def test_current_is_none_before_any_upgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert await migrate.current(engine) is None
    finally:
        await engine.dispose()


async def test_models_match_the_migrations_without_pending_changes(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = await Store.open(database_url)
    try:
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
        assert diff == []
    finally:
        await store.aclose()


def test_shipped_head_constant_is_alembics_head() -> None:
    """`upgrade` skips Alembic when the stored revision is SHIPPED_HEAD: it must be the real head."""
    from corral.store import migrate

    assert migrate.head_revision() == migrate.SHIPPED_HEAD


async def test_a_database_at_0001_with_keys_and_usage_upgrades_to_0002(database_url: str) -> None:
    """Keys made before 0002 stay enabled; usage rows keep their spend."""
    from sqlalchemy import text

    from corral.store.migrate import upgrade

    engine = make_engine(database_url)
    try:
        assert await upgrade(engine, "0001") == "0001"
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO api_keys (id, key_hash, key_prefix, models, model_limits, metadata, created_at, updated_at)"
                " VALUES ('k1', 'h1', 'sk-corral-ab', '[]', '{}', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
            await conn.execute(text(
                "INSERT INTO usage_records (request_id, subject, model, input_tokens, output_tokens,"
                " cached_input_tokens, reasoning_tokens, cost_usd, status, ts)"
                " VALUES ('r1', 'ana', 'gpt', 1, 1, 0, 0, 0.25, 'ok', '2026-01-01 00:00:00')"))
        assert await upgrade(engine) == "0003"
    finally:
        await engine.dispose()
    store = await Store.open(database_url)
    try:
        key = await store.keys.get("k1")
        assert key is not None and key.disabled_at is None and not key.disabled
        assert await store.usage.total_cost(subject="ana") == 0.25
    finally:
        await store.aclose()


async def test_0003_keeps_old_rows_unique_by_their_request_id_and_accepts_a_reused_one(database_url: str) -> None:
    """Rows before 0003 get their request id as usage id; after it, two calls with the
    same client request id are two rows (the idempotency key is the server's usage id)."""
    from sqlalchemy import text

    from corral.store import UsageRecord
    from corral.store.migrate import upgrade

    engine = make_engine(database_url)
    try:
        assert await upgrade(engine, "0002") == "0002"
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO usage_records (request_id, subject, model, input_tokens, output_tokens,"
                " cached_input_tokens, reasoning_tokens, cost_usd, status, ts)"
                " VALUES ('r1', 'ana', 'gpt', 1, 1, 0, 0, 0.25, 'ok', '2026-01-01 00:00:00')"))
        assert await upgrade(engine) == "0003"
    finally:
        await engine.dispose()
    store = await Store.open(database_url)
    try:
        old = await store.usage.get("r1")
        assert old is not None and old.usage_id == "r1" and not old.estimated and old.agent is None
        again = [UsageRecord(request_id="r1", model="gpt", subject="ana", cost_usd=0.5) for _ in range(2)]
        assert await store.usage.insert_many(again) == 2
        assert await store.usage.insert_many(again) == 0  # a replay of the same rows adds nothing
        assert await store.usage.total_cost(subject="ana") == 1.25
    finally:
        await store.aclose()
