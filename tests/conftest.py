"""Shared fixtures: real Postgres and Redis when reachable.

Tests that need them skip with a clear reason when the server is unreachable, and
fail instead when ``CORRAL_REQUIRE_SERVICES=1`` (CI sets it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CORRAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _unavailable(what: str, url: str) -> None:
    message = f"{what} not reachable at {url} (set {what.upper()}_URL via CORRAL_TEST_{what.upper()}_URL)"
    if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"CORRAL_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real user data dir from tests."""
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path_factory.mktemp("corral-data")))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for this test, dropped afterwards."""
    if not _reachable(POSTGRES_URL, 5432):
        _unavailable("postgres", POSTGRES_URL)
    import asyncpg

    name = f"corral_t_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(POSTGRES_URL)
    url = parts._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> str:
    if not _reachable(REDIS_URL, 6379):
        _unavailable("redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to this test, so tests sharing one Redis never collide."""
    return f"corral-test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[object]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
