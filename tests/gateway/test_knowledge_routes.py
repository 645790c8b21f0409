"""The knowledge REST routes as `corral serve` serves them: the master key adds documents,
any key queries, another key cannot write; an unknown base is a 404 in OpenAI's format."""

from __future__ import annotations

import httpx

from corral.config.schema import CorralConfig
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

MASTER = "sk-master-knowledge"


async def test_documents_added_by_the_master_are_found_by_any_key() -> None:
    config = CorralConfig.model_validate({
        "providers": {"script": {"type": "scripted"}},
        "models": {"scripted": {"provider": "script", "model": "scripted"}},
        "auth": {"master_key": MASTER},
        "knowledge": {"handbook": {"embedder": {"type": "offline"}}},
    })
    async with serve_app(create_app(config, providers={"script": ScriptedProvider.from_steps("s", [])})) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as http:
        master = {"authorization": f"Bearer {MASTER}"}
        key = (await http.post("/admin/keys", json={"name": "reader"}, headers=master)).json()["key"]
        reader = {"authorization": f"Bearer {key}"}
        docs = {"documents": [
            {"source": "ops/backups.md", "text": "Backups run nightly at 02:00 with corral db backup."},
            {"source": "ops/alerts.md", "text": "Alerts go to the Slack route named oncall."}]}
        added = await http.post("/v1/knowledge/handbook/documents", json=docs, headers=master)
        refused = await http.post("/v1/knowledge/handbook/documents", json=docs, headers=reader)
        found = await http.post("/v1/knowledge/handbook/query", json={"query": "when do backups run?", "top_k": 1},
                                headers=reader)
        anonymous = await http.post("/v1/knowledge/handbook/query", json={"query": "backups"})
        unknown = await http.post("/v1/knowledge/nope/query", json={"query": "x"}, headers=reader)
    assert added.status_code == 200
    assert refused.status_code == 403
    assert found.status_code == 200
    [hit] = found.json()["results"]
    assert hit["source"] == "ops/backups.md" and "02:00" in hit["text"]
    assert anonymous.status_code == 401
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "knowledge_base_not_found"
