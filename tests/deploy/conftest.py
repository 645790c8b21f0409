"""Fixtures for the deployment generators: a realistic config and a CLI runner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A real `corral serve` with the scripted model and a master key, shared by the tests."""
    tmp_path = tmp_path_factory.mktemp("scripted-server")
    port = _free_port()
    config = tmp_path / "corral.yaml"
    config.write_text(
        "version: 1\nproviders: {scripted: {type: scripted}}\n"
        "models: {echo: {provider: scripted, model: echo, context_window: 32000, max_output_tokens: 4000}}\n"
        "agents: {helper: {model: echo, description: Echo agent}}\n"
        f"auth: {{master_key: '${{TEST_MASTER_KEY:?}}'}}\nserver: {{host: 127.0.0.1, port: {port}}}\n"
    )
    key = "mk-opencode-e2e"
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", "from corral.cli.main import main; main()", "serve", "--config", str(config)],
            env={**os.environ, "TEST_MASTER_KEY": key, "CORRAL_DATA_DIR": str(tmp_path / "data")},
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"corral serve did not become healthy: {log.read_text()[-2000:]}")
        yield config, key
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
