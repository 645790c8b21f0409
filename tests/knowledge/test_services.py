"""`corral up`/`status` and `corral generate compose` see a vector store only when a
knowledge base uses one."""

from __future__ import annotations

import textwrap
from pathlib import Path

from corral.boot.specs import effective_services
from corral.config.loader import load_config
from corral.deploy.compose import ComposeOptions, render
from corral.deploy.source import load_source

USED = """
knowledge:
  docs:
    sources: [docs]
    embedder: {type: offline}
    store: {type: qdrant, url: "${QDRANT_URL:-http://127.0.0.1:6333}"}
  notes:
    sources: [notes]
    embedder: {type: offline}
    store: {type: chroma, url: "http://127.0.0.1:8001"}
  pg:
    sources: [pg]
    embedder: {type: offline}
    store: {type: pgvector, url: "postgresql://corral:secret@db.internal:5433/vectors"}
"""
UNUSED = """
knowledge:
  docs: {sources: [docs], embedder: {type: offline}}
  plain: {sources: [docs], store: {type: qdrant, url: "http://127.0.0.1:6333"}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_boot_probes_the_stores_knowledge_bases_use(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, USED), env={}, probe_ollama=False).config
    specs = {s.name: s for s in effective_services(config, {})}
    assert set(specs) == {"qdrant", "chroma", "postgres"}
    assert (specs["qdrant"].type, specs["qdrant"].url, specs["qdrant"].source) == (
        "qdrant", "http://127.0.0.1:6333", "knowledge.docs.store.url")
    assert specs["chroma"].port == 8001 or specs["chroma"].url == "http://127.0.0.1:8001"
    assert specs["postgres"].address == "postgresql://corral:***@db.internal:5433/vectors"


def test_boot_ignores_embedded_stores_and_stores_without_an_embedder(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, UNUSED), env={}, probe_ollama=False).config
    assert effective_services(config, {}) == []


def test_compose_makes_qdrant_a_core_service_only_when_a_base_uses_it(tmp_path: Path) -> None:
    used = render(load_source(_write(tmp_path, USED)), ComposeOptions())
    assert "profiles" not in used["services"]["qdrant"] and "qdrant-data" in used["volumes"]
    corral = used["services"]["corral"]
    assert corral["depends_on"]["qdrant"] == {"condition": "service_healthy"}  # required: Corral waits
    assert corral["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    unused = render(load_source(_write(tmp_path, UNUSED)), ComposeOptions())
    assert unused["services"]["qdrant"]["profiles"] == ["agents"]  # only with --profile agents
    assert unused["services"]["corral"]["depends_on"]["qdrant"]["required"] is False
    assert "QDRANT_URL" not in unused["services"]["corral"]["environment"]
