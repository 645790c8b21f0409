from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from corral.boot.probes import Status, probe
from corral.boot.specs import ServiceSpec


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def spec(kind: str, **fields: object) -> ServiceSpec:
    return ServiceSpec(name=kind, type=kind, health_kind=kind, **fields)  # type: ignore[arg-type]


# ---- postgres ---------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_up_runs_select_1(fakes: Any, postgres_url: str, http: httpx.AsyncClient) -> None:
    result = await probe(spec("postgres", url=postgres_url), http=http)
    assert result.status is Status.UP
    assert result.detail == "SELECT 1 ok"
    assert result.latency_ms is not None and result.latency_ms > 0


@pytest.mark.postgres
async def test_postgres_unknown_role_on_the_real_server_is_rejected_without_retry(fakes: Any,
    postgres_url: str, http: httpx.AsyncClient
) -> None:
    # Trust auth accepts any password, but a role that does not exist is still refused (28000).
    url = urlsplit(postgres_url)._replace(netloc=f"no_such_role_x:pw@{urlsplit(postgres_url).netloc.split('@')[-1]}")
    result = await probe(spec("postgres", url=url.geturl()), http=http)
    assert result.status is Status.REJECTED
    assert not result.retryable
    assert 'role "no_such_role_x" does not exist' in result.detail
    assert "SQLSTATE 28000" in result.detail
    assert "pw" not in result.detail.replace("pwd", "")


@pytest.mark.postgres
async def test_postgres_missing_database_is_rejected(fakes: Any, postgres_url: str, http: httpx.AsyncClient) -> None:
    url = urlsplit(postgres_url)._replace(path="/corral_no_such_db").geturl()
    result = await probe(spec("postgres", url=url), http=http)
    assert result.status is Status.REJECTED
    assert result.detail.startswith("database not found:")


@pytest.mark.postgres
async def test_postgres_without_url_checks_liveness_like_pg_isready(postgres_url: str, http: httpx.AsyncClient) -> None:
    parts = urlsplit(postgres_url)
    result = await probe(spec("postgres", host=parts.hostname, port=parts.port or 5432), http=http)
    assert result.status is Status.UP


async def test_postgres_wrong_password_from_the_wire_is_rejected(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_postgres("28P01", 'password authentication failed for user "app"') as port:
        result = await probe(spec("postgres", url=f"postgresql://app:wrong@127.0.0.1:{port}/app"), http=http)
    assert result.status is Status.REJECTED
    assert result.detail == ('credentials rejected: password authentication failed for user "app" '
                             "[SQLSTATE 28P01]")
    assert "wrong" not in result.detail


async def test_postgres_starting_up_is_told_apart(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_postgres("57P03", "the database system is starting up") as port:
        result = await probe(spec("postgres", url=f"postgresql://app:pw@127.0.0.1:{port}/app"), http=http)
    assert result.status is Status.STARTING
    assert result.retryable
    assert result.detail == "not ready: the database system is starting up"


async def test_postgres_refused_port_is_down(fakes: Any, http: httpx.AsyncClient) -> None:
    port = fakes.free_port()
    result = await probe(spec("postgres", url=f"postgresql://postgres@127.0.0.1:{port}/x", timeout=2.0), http=http)
    assert result.status is Status.DOWN
    assert result.detail == f"connection refused at 127.0.0.1:{port}"
    assert result.latency_ms is None


async def test_a_server_that_never_answers_is_down_after_the_timeout(fakes: Any, http: httpx.AsyncClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)
        writer.close()

    async with fakes.serve(silent) as port:
        result = await probe(spec("postgres", url=f"postgresql://a@127.0.0.1:{port}/a", timeout=0.3), http=http)
    assert result.status is Status.DOWN
    assert "within 0.3s" in result.detail


# ---- redis ------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_up_answers_pong(fakes: Any, redis_url: str, http: httpx.AsyncClient) -> None:
    result = await probe(spec("redis", url=redis_url), http=http)
    assert (result.status, result.detail) == (Status.UP, "PONG")


async def test_redis_wrong_password_is_rejected(fakes: Any, http: httpx.AsyncClient) -> None:
    reply = b"-WRONGPASS invalid username-password pair or user is disabled."
    async with fakes.fake_redis(reply) as port:
        result = await probe(spec("redis", url=f"redis://:nope@127.0.0.1:{port}/0"), http=http)
    assert result.status is Status.REJECTED
    assert "invalid username-password pair" in result.detail
    assert "nope" not in result.detail


async def test_redis_noauth_is_rejected_with_a_url_and_live_without_one(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_redis(b"-NOAUTH Authentication required.") as port:
        with_url = await probe(spec("redis", url=f"redis://127.0.0.1:{port}/0"), http=http)
        liveness = await probe(spec("redis", host="127.0.0.1", port=port), http=http)
    assert with_url.status is Status.REJECTED
    assert "Authentication required" in with_url.detail
    assert (liveness.status, liveness.detail) == (Status.UP, "accepting connections (no URL: AUTH not checked)")


async def test_redis_loading_is_starting(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_redis(b"-LOADING Redis is loading the dataset in memory") as port:
        result = await probe(spec("redis", url=f"redis://127.0.0.1:{port}/0"), http=http)
    assert result.status is Status.STARTING


async def test_redis_refused_port_is_down(fakes: Any, http: httpx.AsyncClient) -> None:
    port = fakes.free_port()
    result = await probe(spec("redis", host="127.0.0.1", port=port), http=http)
    assert (result.status, result.detail) == (Status.DOWN, f"connection refused at 127.0.0.1:{port}")


# ---- http, tcp, qdrant, chroma, command --------------------------------------------


@pytest.mark.parametrize(("code", "status"), [
    (200, Status.UP), (204, Status.UP), (503, Status.STARTING), (500, Status.UNHEALTHY), (401, Status.REJECTED),
])
async def test_http_status_codes_are_classified(fakes: Any, code: int, status: Status, http: httpx.AsyncClient) -> None:
    async with fakes.fake_http(lambda path: (code, b"{}")) as (port, seen):
        result = await probe(spec("http", url=f"http://127.0.0.1:{port}", health_path="/health"), http=http)
    assert result.status is status
    assert result.detail.startswith(f"GET http://127.0.0.1:{port}/health -> {code}")
    assert seen == ["/health"]
    assert result.latency_ms is not None


async def test_http_expect_status_overrides_2xx(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_http(lambda path: (418, b"")) as (port, _):
        result = await probe(spec("http", port=port, expect_status=(418,)), http=http)
    assert result.status is Status.UP


async def test_http_and_tcp_refused_are_down(fakes: Any, http: httpx.AsyncClient) -> None:
    port = fakes.free_port()
    web = await probe(spec("http", port=port), http=http)
    tcp = await probe(spec("tcp", port=port), http=http)
    assert (web.status, web.detail) == (Status.DOWN, f"GET http://127.0.0.1:{port}: connection refused")
    assert (tcp.status, tcp.detail) == (Status.DOWN, f"connection refused at 127.0.0.1:{port}")


async def test_tcp_up(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_http(lambda path: (200, b"")) as (port, _):
        result = await probe(spec("tcp", host="127.0.0.1", port=port), http=http)
    assert (result.status, result.detail) == (Status.UP, f"accepting TCP connections on 127.0.0.1:{port}")


async def test_qdrant_probes_readyz(fakes: Any, http: httpx.AsyncClient) -> None:
    ready = b"all shards are ready"
    async with fakes.fake_http(lambda p: (200, ready) if p == "/readyz" else (404, b"")) as (port, seen):
        result = await probe(spec("qdrant", port=port), http=http)
    assert result.status is Status.UP
    assert seen == ["/readyz"]


async def test_old_qdrant_without_readyz_falls_back_to_healthz(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_http(lambda p: (200, b"ok") if p == "/healthz" else (404, b"")) as (port, seen):
        result = await probe(spec("qdrant", port=port), http=http)
    assert result.status is Status.UP
    assert seen == ["/readyz", "/healthz"]


async def test_chroma_uses_v2_heartbeat(fakes: Any, http: httpx.AsyncClient) -> None:
    body = b'{"nanosecond heartbeat": 1732233600000000000}'
    async with fakes.fake_http(lambda p: (200, body) if p == "/api/v2/heartbeat" else (404, b"")) as (port, seen):
        result = await probe(spec("chroma", port=port), http=http)
    assert result.status is Status.UP
    assert seen == ["/api/v2/heartbeat"]


async def test_chroma_0_x_falls_back_to_v1_heartbeat(fakes: Any, http: httpx.AsyncClient) -> None:
    async with fakes.fake_http(lambda p: (200, b"{}") if p == "/api/v1/heartbeat" else (404, b"")) as (port, seen):
        result = await probe(spec("chroma", url=f"http://127.0.0.1:{port}/"), http=http)
    assert result.status is Status.UP
    assert result.detail == f"GET http://127.0.0.1:{port}/api/v1/heartbeat -> 200"
    assert seen == ["/api/v2/heartbeat", "/api/v1/heartbeat"]


async def test_command_probe_uses_the_exit_code(fakes: Any, http: httpx.AsyncClient) -> None:
    ok = await probe(spec("command", health_command=(sys.executable, "-c", "print('fine')")), http=http)
    bad = await probe(spec("command", health_command=(sys.executable, "-c", "print('broken'); raise SystemExit(3)")),
                      http=http)
    assert (ok.status, ok.detail) == (Status.UP, "fine")
    assert (bad.status, bad.detail) == (Status.UNHEALTHY, "exit 3: broken")
