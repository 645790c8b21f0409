"""Every vector store passes the same contract, against the real thing: the embedded
store, Qdrant's local mode, a Chroma server started by the test (`chroma run`), and
pgvector when the Postgres server has the extension."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.config.knowledge import StoreConfig
from corral.knowledge import DimensionMismatch, VectorStore, build_store

VECTORS = {1: [1.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0], 3: [0.6, 0.8, 0.0], 4: [0.0, 0.0, 1.0]}
META = {1: {"kind": "markdown", "n": 1}, 2: {"kind": "code", "n": 2, "public": True}, 3: {"kind": "markdown", "n": 3},
        4: {"kind": "text", "n": 4}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(chroma).exists():
        pytest.skip("the chroma server is not installed (pip install 'corral[chroma]')")
    port = _free_port()
    folder = tmp_path_factory.mktemp("chroma")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    child = subprocess.Popen([chroma, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chroma run did not answer on {url}")
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def _pgvector_ready(url: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
    finally:
        await conn.close()
    return None if found else "the pgvector extension is not installed on this Postgres server"


def _pgvector_url(postgres_url: str) -> str:
    import asyncpg

    async def available() -> bool:
        conn = await asyncpg.connect(postgres_url)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"))
        finally:
            await conn.close()

    if not asyncio.run(available()):
        # A skip even when services are required: the extension is a package of the Postgres
        # server, and Debian's own repositories do not ship it.
        pytest.skip("the pgvector extension is not installed on the Postgres server (CREATE EXTENSION vector)")
    return postgres_url


async def test_embedded_store_contract(tmp_path: Path) -> None:
    await _contract(build_store("t", StoreConfig(), tmp_path))


async def test_qdrant_local_store_contract(tmp_path: Path) -> None:
    await _contract(build_store("t", StoreConfig(type="qdrant", path=str(tmp_path / "qdrant")), tmp_path))


async def test_chroma_server_store_contract(chroma_url: str, tmp_path: Path) -> None:
    await _contract(build_store("t", StoreConfig(type="chroma", url=chroma_url, collection=f"c_{tmp_path.name[-20:]}"),
                                tmp_path))


@pytest.fixture
def pgvector_url(postgres_url: str) -> str:
    return _pgvector_url(postgres_url)


async def test_pgvector_store_contract(pgvector_url: str, tmp_path: Path) -> None:
    await _contract(build_store("t", StoreConfig(type="pgvector", url=pgvector_url), tmp_path))


async def _contract(store: VectorStore) -> None:
    try:
        await _check(store)
    finally:
        await store.drop()
        await store.aclose()


async def _check(store: VectorStore) -> None:
    assert await store.stored_dimensions() is None and await store.count() == 0
    await store.open(3)
    assert await store.stored_dimensions() == 3
    ids = list(VECTORS)
    await store.upsert(ids, [VECTORS[i] for i in ids], [META[i] for i in ids])
    assert await store.count() == 4

    found = await store.search([1.0, 0.0, 0.0], 2, {})
    assert [i for i, _ in found] == [1, 3]
    assert found[0][1] == pytest.approx(1.0, abs=1e-5) and found[1][1] == pytest.approx(0.6, abs=1e-5)
    assert [i for i, _ in await store.search([0.0, 1.0, 0.0], 5, {"kind": "markdown"})] == [3, 1]
    assert [i for i, _ in await store.search([0.0, 1.0, 0.0], 5, {"kind": ["code", "text"]})] == [2, 4]
    assert [i for i, _ in await store.search([0.0, 1.0, 0.0], 5, {"kind": "markdown", "n": 1})] == [1]
    assert [i for i, _ in await store.search([1.0, 0.0, 0.0], 5, {"public": True})] == [2]
    assert await store.search([1.0, 0.0, 0.0], 5, {"kind": "nothing"}) == []

    await store.upsert([1], [[0.0, 0.0, 1.0]], [{"kind": "text", "n": 1}])  # replaces, never duplicates
    assert await store.count() == 4
    assert [i for i, _ in await store.search([0.0, 0.0, 1.0], 2, {})] in ([1, 4], [4, 1])

    await store.delete([1, 2, 99])
    assert await store.count() == 2
    assert {i for i, _ in await store.search([1.0, 1.0, 1.0], 10, {})} == {3, 4}

    await store.open(3)  # reopening with the same size is fine
    with pytest.raises(DimensionMismatch, match="holds 3-dimensional vectors, but the embedder gives 5"):
        await store.open(5)


async def test_qdrant_local_mode_keeps_vectors_across_clients(tmp_path: Path) -> None:
    config = StoreConfig(type="qdrant", path=str(tmp_path / "q"))
    first = build_store("docs", config, tmp_path)
    await first.open(3)
    await first.upsert([7], [[0.0, 1.0, 0.0]], [{"kind": "text"}])
    await first.aclose()
    second = build_store("docs", config, tmp_path)
    assert await second.stored_dimensions() == 3 and await second.count() == 1
    assert "qdrant collection 'corral_docs'" in second.description
    await second.aclose()
    await asyncio.sleep(0)
