"""Reading a run is authorized and costs no rate limit: the key that started a run (or
the master key) reads, follows and cancels it; another key gets 404 as if it did not
exist; none of these spend the key's model-call rpm."""

from __future__ import annotations

import httpx

from corral.config.schema import CorralConfig, ScriptStep
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

MASTER = "sk-master-for-run-reading"


async def test_only_the_starting_key_or_the_master_reads_a_run_and_reading_spends_no_rpm() -> None:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "agents": {"assistant": {"model": "scripted"}},
        "auth": {"master_key": MASTER},
    })
    provider = ScriptedProvider.from_steps("script", [ScriptStep(text="hi")] * 3)
    async with serve_app(create_app(config, providers={"script": provider})) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as http:
        master = {"authorization": f"Bearer {MASTER}"}
        made = [(await http.post("/admin/keys", json={"name": n, "rpm": 2}, headers=master)).json()["key"]
                for n in ("alice", "bob")]
        alice, bob = ({"authorization": f"Bearer {k}"} for k in made)
        run = (await http.post("/v1/agents/assistant/runs", json={"input": "x"}, headers=alice)).json()
        reads = [await http.get(f"/v1/runs/{run['id']}", headers=alice) for _ in range(5)]
        events = await http.get(f"/v1/runs/{run['id']}/events", headers=alice)
        by_master = await http.get(f"/v1/runs/{run['id']}", headers=master)
        by_bob = await http.get(f"/v1/runs/{run['id']}", headers=bob)
        bob_events = await http.get(f"/v1/runs/{run['id']}/events", headers=bob)
        bob_cancel = await http.post(f"/v1/runs/{run['id']}/cancel", headers=bob)
        anonymous = await http.get(f"/v1/runs/{run['id']}")
        # rpm 2: the first run took one slot; five reads and a follow took none.
        second = await http.post("/v1/agents/assistant/runs", json={"input": "y"}, headers=alice)
        third = await http.post("/v1/agents/assistant/runs", json={"input": "z"}, headers=alice)
    assert [r.status_code for r in reads] == [200] * 5
    assert reads[0].json()["state"] == "succeeded" and reads[0].json()["output"] == "hi"
    assert events.status_code == 200 and "run.state" in events.text
    assert by_master.status_code == 200 and by_master.json()["id"] == run["id"]
    assert [by_bob.status_code, bob_events.status_code, bob_cancel.status_code] == [404, 404, 404]
    assert by_bob.json()["error"]["code"] == "not_found"
    assert anonymous.status_code == 401
    assert second.status_code == 200
    assert third.status_code == 429
