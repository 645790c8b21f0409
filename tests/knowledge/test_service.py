"""`KnowledgeService` built from a config: model embedders through the real router, the
agent tool, and the config checks that name file:line:key."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from corral.agents.registry import AgentRegistry
from corral.config.errors import ConfigError
from corral.config.loader import load_config
from corral.config.schema import CorralConfig
from corral.knowledge import KnowledgeService, UnknownBase
from corral.llm.registry import build_provider
from corral.llm.router import CallContext, Router
from corral.tools.base import ToolContext, ToolError

from .conftest import write

DOCS = {"a.md": "# Alpha\n\nThe alpha release ships the gateway.\n",
        "b.md": "# Beta\n\nThe beta release adds knowledge bases and retrieval.\n"}


def _config(yaml_text: str, tmp_path: Path) -> CorralConfig:
    path = tmp_path / "corral.yaml"
    path.write_text(textwrap.dedent(yaml_text))
    return load_config(path, env={}, probe_ollama=False).config


def _router(config: CorralConfig) -> Router:
    providers = {n: build_provider(n, p, env={}) for n, p in config.providers.items()}
    return Router(config.models, providers, settings=config.router)


async def test_a_model_embedder_goes_through_the_router_and_reports_its_tokens(tmp_path: Path) -> None:
    write(tmp_path, DOCS)
    config = _config("""
        providers: {fake: {type: scripted}}
        models: {emb: {provider: fake, model: emb, embedding: true}}
        knowledge:
          docs: {sources: ["*.md"], embedder: {model: emb}}
        """, tmp_path)
    used: list[tuple[str, int]] = []

    async def on_usage(alias: str, tokens: int, ctx: CallContext) -> None:
        used.append((alias, tokens))

    router = _router(config)
    service = KnowledgeService.from_config(config.knowledge, root=tmp_path, data_dir=tmp_path / "data",
                                           router=router, on_usage=on_usage)
    report = await service.ingest("docs")
    assert (report.added, report.chunks_embedded, report.pending) == (2, 2, 0)
    assert used and used[0][0] == "emb" and used[0][1] > 0
    hits = await service.query("docs", "knowledge retrieval")
    assert hits[0].source == "b.md"
    (stats,) = await service.stats()
    assert (stats.embedder, stats.search, stats.vectors) == ("model/emb", "hybrid", 2)
    assert service.notes() == []
    await service.aclose()
    await router.aclose()


async def test_an_unreachable_embedding_model_stops_the_ingest_and_the_next_run_resumes(tmp_path: Path) -> None:
    write(tmp_path, DOCS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    config = _config(f"""
        providers:
          down: {{type: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: sk-test}}
          fake: {{type: scripted}}
        models:
          emb: {{provider: down, model: text-embedding-3-small, embedding: true, num_retries: 0}}
        router: {{backoff_base: 0, cooldown_seconds: 0}}
        knowledge:
          docs: {{sources: ["*.md"], embedder: {{model: emb, retries: 1, backoff: 0}}}}
        """, tmp_path)
    router = _router(config)
    service = KnowledgeService.from_config(config.knowledge, root=tmp_path, data_dir=tmp_path / "data",
                                           router=router)
    report = await service.ingest("docs")
    assert report.stopped is not None and "embedder 'emb'" in report.stopped
    assert (report.chunks_written, report.chunks_embedded, report.pending) == (2, 0, 2)
    # The base answers from keyword search meanwhile, even in hybrid mode.
    assert [h.source for h in await service.query("docs", "alpha gateway")] == ["a.md"]
    await service.aclose()
    await router.aclose()

    fixed = config.model_copy(update={"models": {"emb": config.models["emb"].model_copy(
        update={"provider": "fake"})}})
    router = _router(fixed)
    service = KnowledgeService.from_config(fixed.knowledge, root=tmp_path, data_dir=tmp_path / "data",
                                           router=router)
    report = await service.ingest("docs")
    assert (report.unchanged, report.chunks_embedded, report.pending) == (2, 2, 0)
    await service.aclose()
    await router.aclose()


async def test_the_knowledge_tool_returns_passages_with_sources(tmp_path: Path) -> None:
    write(tmp_path, DOCS)
    config = _config("""
        providers: {fake: {type: scripted}}
        models: {chat: {provider: fake, model: chat}}
        knowledge:
          docs: {sources: ["*.md"], description: "the release notes"}
        tools:
          notes: {type: knowledge, base: docs, max_chars: 100}
        agents:
          helper: {model: chat, tools: [notes]}
        """, tmp_path)
    service = KnowledgeService.from_config(config.knowledge, root=tmp_path, data_dir=tmp_path / "data", router=None)
    await service.ingest("docs")
    registry = AgentRegistry.from_config(config, knowledge=service)
    toolset = registry.toolsets["notes"]
    (tool,) = await toolset.list_tools()
    assert tool.name == "search_docs" and "the release notes" in tool.spec.description
    result = await toolset.call("search_docs", {"query": "beta retrieval"}, ToolContext())
    data = json.loads(result.content)
    assert data["passages"][0]["source"] == "b.md" and data["passages"][0]["heading"] == "Beta"
    assert sum(len(p["text"]) for p in data["passages"]) <= 100
    with pytest.raises(ToolError, match="'query' must be a non-empty string"):
        await toolset.call("search_docs", {"query": ""}, ToolContext())
    with pytest.raises(ValueError, match="needs the knowledge service"):
        AgentRegistry.from_config(config)
    with pytest.raises(UnknownBase, match="unknown knowledge base 'nope' \\(known: docs\\)"):
        await service.query("nope", "x")
    await service.aclose()


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(textwrap.dedent("""\
        providers: {fake: {type: scripted}}
        models: {emb: {provider: fake, model: emb}}
        knowledge:
          docs:
            sources: [docs]
            embedder: {model: embb}
            store: {type: chroma}
            chunking: {size: 200, overlap: 300}
        tools:
          notes: {type: knowledge, base: doc}
        """))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, probe_ollama=False)
    rendered = str(caught.value)
    assert f"{path}:6 knowledge.docs.embedder.model: unknown model 'embb' (did you mean 'emb'?)" in rendered
    assert f"{path}:7 knowledge.docs.store: a chroma store needs the url" in rendered
    assert f"{path}:8 knowledge.docs.chunking: overlap must be smaller than size" in rendered
    assert f"{path}:10 tools.notes.base: unknown knowledge base 'doc' (did you mean 'docs'?)" in rendered


async def test_rerank_asks_the_configured_model_and_follows_its_order(tmp_path: Path) -> None:
    write(tmp_path, DOCS)
    config = _config("""
        providers:
          judge: {type: scripted, echo: false, script: [{text: "Most relevant first: [1, 0]"}, {text: "no idea"}]}
        models: {ranker: {provider: judge, model: ranker}}
        knowledge:
          docs: {sources: ["*.md"], search: {mode: keyword, rerank: ranker}}
        """, tmp_path)
    router = _router(config)
    service = KnowledgeService.from_config(config.knowledge, root=tmp_path, data_dir=tmp_path / "data",
                                           router=router)
    await service.ingest("docs")
    plain = [h.source for h in service.base("docs").catalog.keyword("release", 5, {})]
    reranked = [h.source for h in await service.query("docs", "release")]
    assert len(plain) == 2 and reranked == list(reversed(plain))
    unreadable = [h.source for h in await service.query("docs", "release")]  # "no idea": order kept
    assert unreadable == plain
    await service.aclose()
    await router.aclose()
