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


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pgbouncer_url(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PgBouncer (Debian's ``pgbouncer``) in transaction mode in front of the test's
    fresh Postgres database, on a free loopback port; the URL names no pooler setting."""
    import shutil
    import subprocess
    import tempfile
    import time

    binary = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None)
    if binary is None:
        message = "the pgbouncer binary is not installed (apt-get install pgbouncer)"
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CORRAL_REQUIRE_SERVICES=1 but {message}")
        pytest.skip(message)
    parts = urlsplit(postgres_url)
    user = parts.username or "postgres"
    port = _free_loopback_port()
    # PgBouncer refuses to run as root and then reads its files as the user it becomes,
    # so as root it gets a world-readable directory of its own (pytest's is private).
    workdir = tempfile.mkdtemp(prefix="corral-pgbouncer-")
    os.chmod(workdir, 0o755)
    userlist = os.path.join(workdir, "userlist.txt")
    with open(userlist, "w") as handle:
        handle.write(f'"{user}" ""\n')
    ini = os.path.join(workdir, "pgbouncer.ini")
    with open(ini, "w") as handle:
        handle.write(
            "[databases]\n"
            f"* = host={parts.hostname or '127.0.0.1'} port={parts.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {userlist}\n"
            "pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
    for path in (userlist, ini):
        os.chmod(path, 0o644)
    command = [binary, ini] + (["-u", "nobody"] if os.geteuid() == 0 else [])
    log_path = tmp_path_factory.mktemp("pgbouncer") / "pgbouncer.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _reachable(f"postgresql://127.0.0.1:{port}", port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pgbouncer did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield parts._replace(netloc=f"{user}@127.0.0.1:{port}").geturl()
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
