"""Fixtures for the deployment generators: a realistic config and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app

SAMPLE_CONFIG = """\
# a production-ish config: a keyed upstream, a local one on another port, an agent
version: 1
providers:
  openai:
    type: openai
    api_key: ${OPENAI_API_KEY:?set OPENAI_API_KEY}
  local:
    type: openai
    base_url: http://ollama.internal:11434/v1
    api_key: ${LOCAL_KEY:-none}
models:
  fast:
    provider: openai
    model: gpt-4o-mini
    context_window: 64000
    max_output_tokens: 16384
    description: Fast model
  local:
    provider: local
    model: llama3
  embed:
    provider: openai
    model: text-embedding-3-small
    embedding: true
agents:
  assistant:
    model: fast
    description: General helper
  internal-only:
    model: fast
    visibility: internal
server:
  host: 0.0.0.0
  port: 9191
  shutdown_timeout: 20
database:
  url: sqlite:////srv/corral-db/corral.db
pricing:
  fast:
    input: 0.15
    output: 0.6
    cached_input: 0.075
"""


@pytest.fixture
def sample_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("OPENAI_API_KEY", "LOCAL_KEY", "CORRAL_DATABASE_URL", "CORRAL_REDIS_URL", "CORRAL_MASTER_KEY",
                 "CORRAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "conf" / "corral.yaml"
    path.parent.mkdir()
    path.write_text(SAMPLE_CONFIG)
    return path


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(build_app(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout
