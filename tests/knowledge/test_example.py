"""`examples/knowledge.yaml` works offline as its header says: ingest Corral's own docs,
answer a question with the file that documents it, and give the agent its tool."""

from __future__ import annotations

import json
from pathlib import Path

from corral.agents.registry import AgentRegistry
from corral.config.loader import load_config
from corral.knowledge import KnowledgeService
from corral.tools.base import ToolContext

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "knowledge.yaml"


async def test_example_ingests_the_docs_offline_and_answers_with_sources(tmp_path: Path) -> None:
    loaded = load_config(EXAMPLE, env={}, probe_ollama=False)
    service = KnowledgeService.from_config(loaded.config.knowledge, root=EXAMPLE.parent, data_dir=tmp_path,
                                           router=None)
    try:
        report = await service.ingest("docs")
        assert report.added >= 15 and report.pending == 0 and report.skipped == []
        hits = await service.query("docs", "create a virtual key with a budget through the admin API")
        assert "../docs/auth.md" in [h.source for h in hits]
        registry = AgentRegistry.from_config(loaded.config, knowledge=service)
        (agent_tools,) = registry.agents["docs-helper"].toolsets
        result = await agent_tools.call("search_docs", {"query": "systemd service on linux", "top_k": 3},
                                        ToolContext())
        passages = json.loads(result.content)["passages"]
        assert passages[0]["source"] == "../docs/deployment.md" and len(passages) == 3
    finally:
        await service.aclose()
