"""The admin API's spend report and the `corral keys` / `corral spend` commands."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from tests.gateway.conftest import ServerFactory
from typer.testing import CliRunner

from corral.cli.main import build_app

MASTER = "sk-master-admin-0123456789"
PRICED = {"auth": {"master_key": MASTER}, "pricing": {"scripted": {"input": 1000, "output": 2000}}}


async def wait_for_rows(api: httpx.AsyncClient, count: int) -> dict[str, Any]:
    for _ in range(100):
        report = (await api.get("/admin/spend", params={"group_by": "model"})).json()
        if sum(r["requests"] for r in report["data"]) >= count:
            return dict(report)
        await asyncio.sleep(0.1)
    raise AssertionError(f"usage rows never reached {count}: {report}")


async def test_spend_groups_each_answered_request_once_with_its_cost(scripted_server: ServerFactory) -> None:
    async with scripted_server(**PRICED) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as api:
        keys = [(await api.post("/admin/keys", json={"name": n})).json() for n in ("a", "b")]
        for key, times in zip(keys, (2, 1), strict=True):
            async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key["key"], max_retries=0) as sdk:
                for _ in range(times):
                    await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
        by_model = await wait_for_rows(api, 3)
        [row] = by_model["data"]
        assert row["model"] == "scripted" and row["requests"] == 3
        expected = (row["input_tokens"] * 1000 + row["output_tokens"] * 2000) / 1_000_000
        assert row["cost_usd"] > 0 and abs(row["cost_usd"] - expected) < 1e-9
        by_key = {r["key"]: r["requests"] for r in (await api.get("/admin/spend?group_by=key")).json()["data"]}
        assert by_key == {keys[0]["id"]: 2, keys[1]["id"]: 1}
        by_day = (await api.get("/admin/spend?group_by=day")).json()
        assert len(by_day["data"]) == 1 and by_day["total_cost_usd"] == by_model["total_cost_usd"]
        bad = await api.get("/admin/spend?group_by=colour")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        empty = (await api.get("/admin/spend", params={"since": "2999-01-01"})).json()
        assert empty["data"] == [] and empty["total_cost_usd"] == 0


async def test_keys_and_spend_commands_drive_the_admin_api(scripted_server: ServerFactory) -> None:
    runner = CliRunner()
    app = build_app()
    env = {"CORRAL_MASTER_KEY": MASTER}

    async def corral(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    async with scripted_server(**PRICED) as (base_url, _):
        created = json.loads(await corral("keys", "create", "--server", base_url, "--name", "cli", "--rpm", "7",
                                          "--model", "scripted", "--format", "json"))
        assert created["key"].startswith("sk-corral-") and created["rpm"] == 7
        listed = json.loads(await corral("keys", "list", "--server", base_url, "--format", "json"))
        assert [k["name"] for k in listed["data"]] == ["cli"]
        table = await corral("keys", "list", "--server", base_url)
        assert created["key_prefix"] in table and created["key"] not in table
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=created["key"], max_retries=0) as sdk:
            await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
        async with httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}) as api:
            await wait_for_rows(api, 1)
        report = json.loads(await corral("spend", "--server", base_url, "--group-by", "key", "--format", "json"))
        assert report["data"][0]["key"] == created["id"] and report["data"][0]["requests"] == 1
        assert "total: $" in await corral("spend", "--server", base_url, "-g", "model")
        rotated = json.loads(await corral("keys", "rotate", created["id"], "--server", base_url, "--format", "json"))
        assert rotated["key"] != created["key"]
        assert f"revoked {created['id']}" in await corral("keys", "revoke", created["id"], "--server", base_url)
        missing = await asyncio.to_thread(runner.invoke, app, ["keys", "list", "--server", base_url], env={})
        assert missing.exit_code == 2


async def test_a_locked_database_never_holds_up_answers_and_rows_land_once_it_frees(tmp_path: Any) -> None:
    import sqlite3
    import time

    from tests.gateway.conftest import scripted_config

    from corral.gateway.app import create_app
    from corral.testing.scripted import ScriptedProvider
    from corral.testing.server import serve_app

    db = tmp_path / "corral.db"
    config = scripted_config(auth={"master_key": MASTER}, database={"url": f"sqlite:///{db}"})
    app = create_app(config, providers={"script": ScriptedProvider.from_steps("script", [])})
    async with serve_app(app) as base_url, openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=MASTER, max_retries=0
    ) as sdk:
        blocker = sqlite3.connect(db, timeout=10, check_same_thread=False)
        # In a thread: waiting for a lock on the loop's thread would stall the server under test.
        await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")  # no other connection can write now (WAL readers still read)
        try:
            started = time.perf_counter()
            for _ in range(5):
                await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
            elapsed = time.perf_counter() - started
            await asyncio.sleep(1.5)  # past the writer's flush interval: it is stuck on the lock
            writer = app.state.gateway.writer
            assert writer.stats.written == 0 and writer.stats.queued == 5
        finally:
            blocker.rollback()
            blocker.close()
        async with httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}) as api:
            report = await wait_for_rows(api, 5)
        assert report["data"][0]["requests"] == 5
        assert elapsed < 5  # answers did not wait for the database (its busy timeout is 30 s)


async def test_team_budget_through_the_gateway_blocks_all_its_keys(scripted_server: ServerFactory) -> None:
    async with scripted_server(**PRICED) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as api:
        team = (await api.post("/admin/teams", json={"name": "research", "max_budget": 0.000001,
                                                       "budget_duration": "1d"})).json()
        assert team["spend"] == 0.0
        duplicate = await api.post("/admin/teams", json={"name": "research"})
        assert duplicate.status_code == 409
        keys = [(await api.post("/admin/keys", json={"team_id": team["id"]})).json()["key"] for _ in range(2)]
        body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
        first = await api.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {keys[0]}"})
        assert first.status_code == 200
        blocked = await api.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {keys[1]}"})
        assert blocked.status_code == 402 and blocked.json()["error"]["code"] == "budget_exceeded"
        [listed] = (await api.get("/admin/teams")).json()["data"]
        assert listed["spend"] > listed["max_budget"]
        unknown = await api.post("/admin/keys", json={"team_id": "nope"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "team_id"


HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def cache(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    return {"url": request.getfixturevalue("redis_url"), "prefix": request.getfixturevalue("redis_prefix")}


async def test_patch_lowers_a_keys_rpm_and_its_next_request_is_limited(
    scripted_server: ServerFactory, cache: dict[str, str]
) -> None:
    async with scripted_server(auth={"master_key": MASTER}, cache=cache) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as api:
        created = (await api.post("/admin/keys", json={"name": "ci", "rpm": 5})).json()
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=created["key"], max_retries=0) as sdk:
            for _ in range(2):
                await sdk.chat.completions.create(model="scripted", messages=HI)
            patched = await api.patch(f"/admin/keys/{created['id']}", json={"rpm": 2})
            with pytest.raises(openai.RateLimitError) as caught:
                await sdk.chat.completions.create(model="scripted", messages=HI)
            lifted = (await api.patch(f"/admin/keys/{created['id']}", json={"rpm": None})).json()
            await sdk.chat.completions.create(model="scripted", messages=HI)
    assert patched.status_code == 200 and patched.json()["rpm"] == 2 and patched.json()["name"] == "ci"
    assert "key" not in patched.json() and created["key"] not in patched.text  # the secret is never shown again
    assert caught.value.body["message"] == "Rate limit exceeded: 2 requests per minute for this key"  # type: ignore[index]
    assert lifted["rpm"] is None


async def test_patch_changes_settings_disables_and_enables_a_key_and_refuses_bad_input(
    scripted_server: ServerFactory,
) -> None:
    async with scripted_server(**PRICED) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as api:
        created = (await api.post("/admin/keys", json={"models": ["other"], "max_budget": 0.000001})).json()
        path = f"/admin/keys/{created['id']}"
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=created["key"], max_retries=0) as sdk:
            with pytest.raises(openai.PermissionDeniedError):
                await sdk.chat.completions.create(model="scripted", messages=HI)
            changed = (await api.patch(path, json={"name": "renamed", "models": None, "tpm": 1000,
                                                   "expires_at": "2999-01-01T00:00:00", "metadata": {"owner": "bo"},
                                                   "model_limits": {"scripted": {"rpm": 9}}})).json()
            await sdk.chat.completions.create(model="scripted", messages=HI)  # now any model; spends the budget
            with pytest.raises(openai.APIStatusError) as spent:
                await sdk.chat.completions.create(model="scripted", messages=HI)
            raised = (await api.patch(path, json={"max_budget": 100})).json()
            await sdk.chat.completions.create(model="scripted", messages=HI)
            disabled = (await api.patch(path, json={"disabled": True})).json()
            with pytest.raises(openai.AuthenticationError) as refused:
                await sdk.chat.completions.create(model="scripted", messages=HI)
            enabled = (await api.patch(path, json={"disabled": False})).json()
            await sdk.chat.completions.create(model="scripted", messages=HI)
        bad = {name: await api.patch(path, json=body) for name, body in {
            "rpm": {"rpm": 0}, "secret": {"key": "sk-corral-mine"}, "duration": {"budget_duration": "monthly"},
            "empty": {}, "team": {"team_id": "nope"}}.items()}
        missing = await api.patch("/admin/keys/nope", json={"rpm": 1})
        await api.delete(path)
        revoked = await api.patch(path, json={"rpm": 1})
        fetched = (await api.get(path)).json()
    assert changed["name"] == "renamed" and changed["models"] == [] and changed["tpm"] == 1000
    assert changed["expires_at"] == "2999-01-01T00:00:00+00:00" and changed["metadata"] == {"owner": "bo"}
    assert changed["model_limits"] == {"scripted": {"rpm": 9}} and changed["max_budget"] == 0.000001
    assert spent.value.status_code == 402
    assert raised["max_budget"] == 100 and raised["spend"] > 0.000001  # the spend so far is kept
    assert disabled["disabled"] is True and disabled["disabled_at"] is not None
    assert refused.value.code == "disabled_api_key"
    assert enabled["disabled"] is False and enabled["disabled_at"] is None
    assert {name: r.status_code for name, r in bad.items()} == dict.fromkeys(bad, 400)
    assert bad["rpm"].json()["error"]["param"] == "rpm"
    assert "POST /admin/keys/{id}/rotate" in bad["secret"].json()["error"]["message"]
    assert "invalid duration" in bad["duration"].json()["error"]["message"]
    assert bad["empty"].json()["error"]["message"].startswith("Nothing to change")
    assert bad["team"].json()["error"]["param"] == "team_id"
    assert missing.status_code == 404 and revoked.status_code == 409
    assert fetched["name"] == "renamed" and fetched["revoked_at"] is not None


async def test_keys_update_command_patches_a_key(scripted_server: ServerFactory) -> None:
    runner = CliRunner()
    app = build_app()

    async def corral(*args: str) -> Any:
        result = await asyncio.to_thread(runner.invoke, app, list(args), env={"CORRAL_MASTER_KEY": MASTER})
        return result

    async with scripted_server(**PRICED) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as api:
        created = (await api.post("/admin/keys", json={"name": "cli", "rpm": 7})).json()
        first = await corral("keys", "update", created["id"], "--server", base_url, "--tpm", "500", "--disable",
                             "-m", "scripted", "--format", "json")
        second = await corral("keys", "update", created["id"], "--server", base_url, "--clear", "rpm",
                              "--clear", "models", "--enable", "--format", "json")
        table = await corral("keys", "update", created["id"], "--server", base_url, "--name", "renamed")
        wrong = await corral("keys", "update", created["id"], "--server", base_url, "--clear", "colour")
        nothing = await corral("keys", "update", created["id"], "--server", base_url)
    assert first.exit_code == 0, first.output
    updated = json.loads(first.output)
    assert (updated["tpm"], updated["rpm"], updated["disabled"], updated["models"]) == (500, 7, True, ["scripted"])
    again = json.loads(second.output)
    assert (again["rpm"], again["models"], again["disabled"], again["tpm"]) == (None, [], False, 500)
    assert table.exit_code == 0 and "renamed" in table.output and created["key"] not in table.output
    assert wrong.exit_code == 2 and "--clear takes" in wrong.output
    assert nothing.exit_code == 2


async def test_usage_rows_and_the_cost_metric_price_the_alias_first(scripted_server: ServerFactory) -> None:
    """docs/pricing.md: the alias's price wins over the upstream id's, in the spend report
    and in `corral_cost_usd_total` alike."""
    from corral.config.schema import ModelConfig

    config = {**PRICED, "observability": {"metrics": True},
              "models": {"house": ModelConfig(provider="script", model="scripted", num_retries=0)},
              "pricing": {"house": {"input": 1000, "output": 2000}, "scripted": {"input": 1, "output": 1}}}
    async with scripted_server(**config) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as api:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=MASTER, max_retries=0) as sdk:
            await sdk.chat.completions.create(model="house", messages=[{"role": "user", "content": "hi"}])
        [row] = (await wait_for_rows(api, 1))["data"]
        expected = (row["input_tokens"] * 1000 + row["output_tokens"] * 2000) / 1_000_000
        assert row["model"] == "house" and row["cost_usd"] == pytest.approx(expected) and expected > 0
        metrics = (await api.get("/metrics")).text
        [line] = [x for x in metrics.splitlines() if x.startswith('corral_cost_usd_total{model="house"}')]
        assert float(line.split()[-1]) == pytest.approx(expected)


async def test_metadata_that_cannot_be_answered_as_json_is_refused_before_it_is_stored(
        scripted_server: ServerFactory) -> None:
    """Found by the contract fuzzer: an integer past 64 bits in metadata was stored, then
    every listing of teams (or keys) failed with a 500; as a limit, it failed to store (500)."""
    async with scripted_server(**PRICED) as (base_url, _), httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {MASTER}"}
    ) as client:
        huge = {"n": 2**70}
        team = await client.post("/admin/teams", json={"name": "t", "metadata": huge})
        key = await client.post("/admin/keys", json={"metadata": huge})
        limit = await client.post("/admin/keys", json={"rpm": 2**64})
        teams = await client.get("/admin/teams")
        keys = await client.get("/admin/keys")
    assert team.status_code == 400 and "64 bits" in team.json()["error"]["message"]
    assert key.status_code == 400 and key.json()["error"]["param"] == "metadata"
    assert limit.status_code == 400 and limit.json()["error"]["param"] == "rpm"
    assert teams.status_code == 200 and teams.json()["data"] == []
    assert keys.status_code == 200 and keys.json()["data"] == []
