"""Two real `corral serve` replicas on one Postgres and one Redis: a key's rate limit
and budget hold across both, not per process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from corral.testing.process import ServeProcess, start_serve

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

MASTER = "sk-master-replicas-0123456789"
CONFIG = """
version: 1
providers:
  script:
    type: scripted
models:
  chat:
    provider: script
    model: scripted
pricing:
  scripted:
    input: 10000
    output: 10000
database:
  url: {database}
cache:
  url: {redis}
  prefix: "{prefix}"
auth:
  master_key: {master}
"""
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}


def start_replicas(tmp_path: Path, postgres_url: str, redis_url: str, prefix: str,
                   procs: list[ServeProcess]) -> list[ServeProcess]:
    config = tmp_path / "corral.yaml"
    config.write_text(CONFIG.format(database=postgres_url, redis=redis_url, prefix=prefix, master=MASTER))
    for _ in range(2):
        procs.append(start_serve(config))
    return procs


def create_key(base_url: str, **limits: object) -> dict[str, object]:
    response = httpx.post(f"{base_url}/admin/keys", json=limits, timeout=10,
                          headers={"authorization": f"Bearer {MASTER}"})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_100_rpm_key_gets_at_most_100_answers_across_two_replicas(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: object,
    serve_processes: list[ServeProcess],
) -> None:
    a, b = start_replicas(tmp_path, postgres_url, redis_url, redis_prefix, serve_processes)
    key = str(create_key(a.base_url, rpm=100)["key"])
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=20)) as client:
        responses = await asyncio.gather(*(
            client.post(f"{(a, b)[i % 2].base_url}/v1/chat/completions", json=BODY) for i in range(140)
        ))
    elapsed = time.monotonic() - started
    assert elapsed < 60, "the burst must fit in one minute window for the assertion to mean anything"
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 100
    assert codes.count(429) == 40
    served_by = {url: sum(1 for i, r in enumerate(responses) if r.status_code == 200 and i % 2 == n)
                 for n, url in enumerate(("a", "b"))}
    assert served_by["a"] > 0 and served_by["b"] > 0  # both replicas served, sharing one limit
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_a_spent_budget_blocks_on_both_replicas_at_once(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: object,
    serve_processes: list[ServeProcess],
) -> None:
    a, b = start_replicas(tmp_path, postgres_url, redis_url, redis_prefix, serve_processes)
    budget = 0.5
    created = create_key(a.base_url, max_budget=budget, budget_duration="30d")
    headers = {"authorization": f"Bearer {created['key']}"}
    admin = {"authorization": f"Bearer {MASTER}"}

    def spend() -> float:
        info = httpx.get(f"{b.base_url}/admin/keys/{created['id']}", headers=admin, timeout=10).json()
        return float(info["spend"])

    spends: list[float] = []
    refused_on = None
    for i in range(200):
        replica = (a, b)[i % 2]
        response = httpx.post(f"{replica.base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
        if response.status_code != 200:
            assert response.status_code == 402, response.text
            assert response.json()["error"]["code"] == "budget_exceeded"
            refused_on = i
            break
        spends.append(spend())
    assert refused_on is not None and len(spends) >= 2
    # At most one request over: every answer but the last started under the budget.
    assert spends[-2] < budget <= spends[-1]
    for replica in (a, b):
        again = httpx.post(f"{replica.base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
        assert again.status_code == 402

    # Each answered request's usage is stored exactly once, off the request path.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = httpx.get(f"{a.base_url}/admin/spend", params={"group_by": "key", "key_id": created["id"]},
                         headers=admin, timeout=10).json()["data"]
        if rows and rows[0]["requests"] == len(spends):
            break
        await asyncio.sleep(0.2)
    assert rows[0]["requests"] == len(spends)
    assert rows[0]["cost_usd"] == pytest.approx(spends[-1])


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other_at_once(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, redis_client: object,
    serve_processes: list[ServeProcess],
) -> None:
    a, b = start_replicas(tmp_path, postgres_url, redis_url, redis_prefix, serve_processes)
    created = create_key(a.base_url)
    headers = {"authorization": f"Bearer {created['key']}"}
    assert httpx.post(f"{b.base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=10).status_code == 200
    revoked = httpx.delete(f"{a.base_url}/admin/keys/{created['id']}", timeout=10,
                           headers={"authorization": f"Bearer {MASTER}"})
    assert revoked.status_code == 200
    # B had the key cached; the Redis invalidation reaches it well before the 30 s periodic refresh.
    deadline = time.monotonic() + 2.0
    status = 200
    while time.monotonic() < deadline:
        status = httpx.post(f"{b.base_url}/v1/chat/completions", json=BODY, headers=headers, timeout=10).status_code
        if status == 401:
            break
        await asyncio.sleep(0.05)
    assert status == 401
